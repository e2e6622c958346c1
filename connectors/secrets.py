"""Secrets are referenced from config, never written in it: an environment variable or a file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class SecretRef(BaseModel):
    """Where a secret lives: `env = "NAME"` or `file = "/path"` (exactly one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_inline(cls, data: Any) -> Any:
        if isinstance(data, str):
            # Never echo the value: it is probably the secret itself.
            raise ValueError(
                "a secret may not be written in the config file; "
                'give { env = "VARIABLE" } or { file = "/path/to/file" }'
            )
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self

    def reveal(self) -> str:
        """The secret's value. Errors name the variable or file, never the value."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise LookupError(f"environment variable {self.env} is not set")
            return value
        assert self.file is not None
        try:
            return self.file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise LookupError(f"secret file {self.file} cannot be read: {exc.strerror}") from None

    def describe(self) -> str:
        return f"env:{self.env}" if self.env else f"file:{self.file}"
