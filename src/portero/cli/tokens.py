"""`portero token create|list|revoke`: edit the state directory's token file directly (as `kubeadm token` does);
the running daemon sees the change on its next request."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from portero import tokens
from portero.tokens import TokenError

token_app = typer.Typer(help="API tokens: create, list, revoke.", no_args_is_help=True)
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=not sys.stderr.isatty())  # piped: never wrapped mid-sentence


def _state_dir() -> Path:
    return Path(os.environ.get("PORTERO_STATE_DIR", ".portero"))


def _fail(exc: TokenError) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
    return typer.Exit(1)


@token_app.command()
def create(
    ctx: typer.Context,
    role: Annotated[str, typer.Option(help="viewer (read only) or admin (everything).")] = "viewer",
    name: Annotated[str | None, typer.Option(help="What it is for, e.g. grafana or ci.")] = None,
) -> None:
    """Make a token and print it once (only its hash is kept); the token alone goes to stdout."""
    try:
        record, secret = tokens.create(_root_state_dir(ctx), role, name)
    except TokenError as exc:
        raise _fail(exc) from None
    err.print(f"created {record.role} token {record.id}" + (f" ({escape(name)})" if name else ""), highlight=False)
    print(secret)


@token_app.command("list")
def list_tokens(
    *,
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Ids, roles, names and creation times; never a secret."""
    try:
        found = tokens.listed(_root_state_dir(ctx))
    except TokenError as exc:
        raise _fail(exc) from None
    if as_json:
        out.print_json(json.dumps([{k: v for k, v in asdict(r).items() if k != "sha256"} for r in found]))
        return
    table = Table("ID", "ROLE", "NAME", "CREATED", box=None)
    for record in found:
        table.add_row(record.id, record.role, escape(record.name or ""), record.created_at)
    out.print(table)


@token_app.command()
def revoke(ctx: typer.Context, token_id: Annotated[str, typer.Argument(help="The token's id (`token list`).")]) -> None:
    """Remove a token; requests that send it are refused from then on."""
    state_dir = _root_state_dir(ctx)
    saved = tokens.saved_admin_token(state_dir)
    try:
        record = tokens.revoke(state_dir, token_id)
    except TokenError as exc:
        raise _fail(exc) from None
    out.print(f"revoked {record.role} token {record.id}" + (f" ({escape(record.name)})" if record.name else ""))
    if saved is not None and tokens.digest(saved) == record.sha256:
        err.print(
            f"it was the CLI's token: {state_dir / tokens.ADMIN_TOKEN_FILE} is removed; give the CLI another admin "
            "token with PORTERO_TOKEN=$(portero token create --role admin --name cli)",
            highlight=False,
        )


def _root_state_dir(ctx: typer.Context) -> Path:
    """--state-dir of the `portero` command itself (its callback ran first), else PORTERO_STATE_DIR."""
    root = ctx.find_root()
    found = root.params.get("state_dir")
    return Path(found) if found is not None else _state_dir()
