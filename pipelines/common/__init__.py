"""Beam plumbing every job shares: options and command lines, storage, dead letters, hashing, codecs."""
