"""The README's quickstart runs as written: each command of its "Your own data" block is one its program takes
(flags parsed and checked by the program's own parser, with the block's variables filled in)."""

from __future__ import annotations

import pathlib
import re
import shlex

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _quickstart() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    block = text.split("## Your own data: the commands in order", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = block.strip().splitlines()
    variables = dict(part.split("=", 1) for part in lines[0].split())
    commands = []
    for line in lines[1:]:
        line = re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], line)
        commands.append(shlex.split(line))
    return commands


def test_the_readme_quickstart_commands_parse_with_their_programs():
    from pipelines.evaluate.options import from_args as evaluate_args
    from pipelines.evaluate.report import build_parser as report_parser
    from pipelines.infer.options import from_args as infer_args
    from pipelines.preprocess.options import from_args as preprocess_args
    from trainer.task import from_args as train_args

    parsers = {
        "pipelines.preprocess": preprocess_args,
        "trainer.task": train_args,
        "pipelines.infer": infer_args,
        "pipelines.evaluate": evaluate_args,
        "pipelines.evaluate.report": lambda argv: report_parser().parse_args(argv),
    }
    commands = _quickstart()
    assert [c[:2] for c in commands] == [["python", "-m"]] * 5
    assert [c[2] for c in commands] == list(parsers)
    for command in commands:
        parsers[command[2]](command[3:])  # raises UsageError on a flag the program does not take
    train = train_args(commands[1][3:])
    assert train.preset == "pet_cpu" and train.model == "unet"
    assert evaluate_args(commands[3][3:])[0].split == "test"
    infer = infer_args(commands[2][3:])[0]  # infer reads the images of the split that evaluate scores
    assert (infer.input_dir, infer.dataset, infer.split) == ("data/oxford-iiit-pet", "pet", "test")
