"""The engine never puts SQL parameters (case text) into error messages, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from kbservice.db.schema import leases
from kbservice.services import Services


def test_a_database_error_does_not_show_its_parameters(services: Services) -> None:
    # Issue 15, defect 3: the CLI's traceback of a failed insert printed the SQL parameters (case text).
    row = {"name": "x", "holder": "Jane Roe, fever and cough", "expires_at": 0.0, "acquired_at": 0.0}
    with services.engine.begin() as conn:
        conn.execute(insert(leases).values(**row))
    with pytest.raises(IntegrityError) as raised, services.engine.begin() as conn:
        conn.execute(insert(leases).values(**row))  # the same primary key again
    assert "Jane Roe" not in str(raised.value) and "parameters hidden" in str(raised.value)
