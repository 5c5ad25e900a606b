"""Shared base for every message model: frozen, strict about unknown fields."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Message(BaseModel):
    """A frozen pydantic model; unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
