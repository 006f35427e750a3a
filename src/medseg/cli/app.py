"""The typer application, its consoles and the ``command`` decorator that turns a ``MedsegError`` into one line."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from medseg import __version__
from medseg.core.errors import MedsegError


def _flags_without_type(params: list[Any]) -> list[Any]:
    """On/off options (``--version``, ``--overwrite/--no-overwrite``, ``--help``) are shown without a ``<bool>`` type."""
    for p in params:
        if getattr(p, "is_flag", False) and getattr(p, "metavar", "") is None:
            p.metavar = ""
    return params


class Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_without_type(super().get_params(ctx))


class Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_without_type(super().get_params(ctx))


app = typer.Typer(
    cls=Group,
    name="medseg",
    help="Medical image segmentation: import → inspect → prepare → train → evaluate → predict → compare / sweep → report → demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def command(name: str, **kwargs: Any) -> Callable[[F], F]:
    """Register a command whose ``MedsegError`` is printed on one line (exit status 2)."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            try:
                return fn(*args, **kw)
            except MedsegError as e:
                err_console.print(f"[bold red]error:[/] {e.one_line()}", markup=True, highlight=False, soft_wrap=True)
                raise typer.Exit(e.exit_code) from None

        app.command(name, cls=Command, **kwargs)(wrapper)
        return fn

    return deco


SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override a config field, e.g. --set train.lr=3e-4 (repeatable)")]


@app.callback(invoke_without_command=True)
def _main(version: Annotated[bool, typer.Option("--version", help="print the version and exit", is_eager=True)] = False) -> None:
    if version:
        console.print(f"medseg {__version__}")
        raise typer.Exit()
