"""The suite's warm-interpreter runner (``tests/fixtures/warm.py``) gives a command what a fresh ``python`` would:
the tests that use it rely on each of these."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.fixtures import warm

PY = sys.executable


def test_exit_status_streams_folder_arguments_and_environment(tmp_path):
    code = (
        "import os, sys\n"
        "print(sys.argv, os.getcwd(), os.environ.get('SEGFLOW_PROBE'), os.environ.get('HOME') is None)\n"
        "print('to stderr', file=sys.stderr)\n"
        "sys.exit(3)"
    )
    env = {k: v for k, v in os.environ.items() if k != "HOME"}
    env["SEGFLOW_PROBE"] = "given"
    done = warm.run([PY, "-c", code, "a", "b c"], env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 3
    assert done.stdout == f"['-c', 'a', 'b c'] {tmp_path} given True\n"
    assert done.stderr == "to stderr\n"


def test_a_module_runs_as_main_with_its_file_as_argv0_and_sees_stdin(tmp_path):
    (tmp_path / "probe_module.py").write_text(
        "import sys\nif __name__ == '__main__':\n    print(sys.argv[0], sys.argv[1:], sys.stdin.read().upper())\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    done = warm.run([PY, "-m", "probe_module", "--flag"], env=env, cwd=tmp_path, input="abc", timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{tmp_path / 'probe_module.py'} ['--flag'] ABC\n"


def test_tmpdir_is_read_from_the_commands_environment(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    done = warm.run([PY, "-c", "import tempfile; print(tempfile.gettempdir())"], env=env, timeout=60)
    assert done.stdout.strip() == str(tmp_path)


def test_a_signal_ends_the_command_and_is_its_status():
    process = warm.Process([PY, "-c", "import time; print('up', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    assert process.stdout.readline() == b"up\n"
    assert process.poll() is None
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    process.stdout.close()


def test_an_uncaught_interrupt_ends_the_command_by_sigint_as_python_does():
    done = warm.run([PY, "-c", "raise KeyboardInterrupt"], timeout=60)
    fresh = subprocess.run([PY, "-c", "raise KeyboardInterrupt"], capture_output=True, text=True, timeout=60)
    assert done.returncode == fresh.returncode == -signal.SIGINT
    assert "KeyboardInterrupt" in done.stderr


def test_atexit_handlers_and_threads_finish_before_the_exit():
    code = (
        "import atexit, threading, time\n"
        "atexit.register(lambda: print('atexit ran', flush=True))\n"
        "threading.Thread(target=lambda: (time.sleep(0.3), print('thread done', flush=True))).start()"
    )
    done = warm.run([PY, "-c", code], timeout=60)
    assert done.returncode == 0 and done.stdout.splitlines() == ["thread done", "atexit ran"], done


def test_a_timeout_kills_the_command():
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        warm.run([PY, "-c", "import time; time.sleep(60)"], timeout=1)
    assert time.monotonic() - start < 30


def test_commands_run_at_once_and_tensorflow_comes_preloaded():
    code = "import sys; print('tensorflow' in sys.modules, flush=True); sys.stdin.read()"
    first, second = (warm.Process([PY, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in "12")
    for process in (first, second):  # both run before either is told to end
        assert process.stdout.readline() == b"True\n"
    for process in (first, second):
        out, _ = process.communicate(b"")
        assert process.returncode == 0


def test_a_default_socket_timeout_in_the_test_process_does_not_break_large_requests():
    """A library in the test process may set ``socket.setdefaulttimeout``: the server's sockets must still block
    (a request larger than one read, here a large environment, once failed with BlockingIOError)."""
    script = (
        "import os, socket, sys\n"
        "socket.setdefaulttimeout(30)\n"
        "from tests.fixtures import warm\n"
        "warm.PRELOAD = ()  # what is checked is the exchange, not the imports\n"
        "env = dict(os.environ, **{f'SEGFLOW_PROBE_{i}': 'x' * 1000 for i in range(300)})\n"
        "for _ in range(3):\n"
        "    done = warm.run([sys.executable, '-c', 'import os; print(len(os.environ))'], env=env, timeout=60)\n"
        "    assert done.returncode == 0 and int(done.stdout) == len(env), done\n"
        "print('ok')\n"
    )
    done = subprocess.run([PY, "-c", script], capture_output=True, text=True, cwd=warm.ROOT, timeout=120)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr[-3000:]
