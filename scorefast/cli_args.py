"""Argument types of the command line: a bad value is an argparse error (usage, exit status 2)
that names the flag and what was expected, found before any work starts."""

from __future__ import annotations

import argparse
import math
import os

import torch

from . import _checks, backend_registry

MAX_STEPS = _checks.MAX_STEP  # the sampler step is one 32-bit word of the noise counter
MAX_COUNT = 2**31 - 1  # particles, batch sizes, widths: one int32 index per row
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def int_in(lo: int, hi: int):
    """An integer in [lo, hi]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer in [{lo}, {hi}], got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer in [{lo}, {hi}], got {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


seed = int_in(0, 2**64 - 1)


def device(text: str) -> torch.device:
    """cpu, or cuda[:index] of a GPU that is visible here."""
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected cpu or cuda[:index], got {text!r}") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise argparse.ArgumentTypeError(f"expected cpu or cuda[:index], got {text!r}")
    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: no CUDA GPU is visible on this machine")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def backend(text: str) -> str:
    """auto or one of the backends (whether it runs on the chosen device is checked later)."""
    if text != "auto" and text not in backend_registry.NAMES:
        raise argparse.ArgumentTypeError(f"expected auto or one of {', '.join(backend_registry.NAMES)}, got {text!r}")
    return text


def output_file(text: str) -> str:
    """A file that can be written: not a directory, in a directory that exists or can be made."""
    if not text:
        raise argparse.ArgumentTypeError("expected a file path, got an empty string")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; give a file path")
    parent = os.path.dirname(os.path.abspath(text))
    while not os.path.exists(parent):  # the nearest existing folder will hold the new ones
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: {parent!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK) or (os.path.exists(text) and not os.access(text, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: permission denied")
    return text


def plot_file(text: str) -> str:
    """An image path; without a suffix, .png is added (as matplotlib would) so the path printed is the file."""
    if not text or os.path.isdir(text):
        return output_file(text)  # its message
    suffix = os.path.splitext(text)[1]
    if not suffix:
        text += ".png"
    elif suffix.lower() not in PLOT_SUFFIXES:
        raise argparse.ArgumentTypeError(f"expected an image file ({', '.join(PLOT_SUFFIXES)}), got {text!r}")
    return output_file(text)


def check_backend(parser_error, name: str, dev: torch.device, op: str) -> None:
    """--backend ``name`` must run ``op`` on ``dev`` here."""
    try:
        backend_registry.resolve(name, dev, op)
    except (RuntimeError, ValueError, NotImplementedError) as exc:
        parser_error(f"argument --backend: {exc}")
