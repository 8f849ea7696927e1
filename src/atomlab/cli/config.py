"""``atomlab config``: show the effective settings and where each value came from."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from atomlab.cli import output

app = typer.Typer(help="Inspect the effective settings.", no_args_is_help=True)


@app.command("show")
def show(json_out: output.JsonOption = False) -> None:
    """Print every setting, its value and its source (default, file, env or cli)."""
    loaded = output.state().loaded
    described = loaded.describe()
    payload = {
        "config_path": str(loaded.config_path) if loaded.config_path else None,
        "settings": loaded.settings.model_dump(mode="json"),
        "sources": {key: entry["source"] for key, entry in described.items()},
    }

    def human(console: Console) -> None:
        table = Table("setting", "value", "source", title="atomlab settings")
        for key, entry in described.items():
            table.add_row(key, str(entry["value"]), entry["source"])
        console.print(table)
        console.print(f"config file: {payload['config_path'] or '(none)'}")

    output.emit(payload, json_flag=json_out, human=human)
