"""The inspection record store: SQLAlchemy Core tables, any database URL, SQLite by default.

Every inspection becomes one row of ``inspections``, and each defect box a detector found in it one row
of ``detections``, written in one transaction before the service answers. A database made before the
``detections`` table existed gets it when opened (``create_all`` adds missing tables and leaves the
others as they are); its inspections have no detection rows. On SQLite
the journal runs in WAL mode with ``synchronous=FULL``, so a committed row survives a crash of the
process or of the machine.

On PostgreSQL (``postgresql+psycopg://user@host/db``) several service processes can share one database:
timestamps are ``timestamp with time zone``, pooled connections are checked before use (a restarted
server costs no request), and processes that start at once create the tables one after the other
under an advisory lock (``CREATE TABLE`` of the same table in two sessions fails on PostgreSQL).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    TypeDecorator,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, InternalError, OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from pcbsiam.errors import PcbsiamError

log = logging.getLogger(__name__)


#: What a read that fails for want of the database says.
READ_ERROR = "the inspection database cannot be read"


#: Databases whose timestamps keep their time zone: there the column is ``timestamp with time zone``.
TZ_AWARE_DIALECTS = frozenset({"postgresql"})


class UTCDateTime(TypeDecorator):
    """A timestamp read back as an aware UTC ``datetime``.

    Stored as ``timestamp with time zone`` where the database has one (PostgreSQL: the same instant
    whatever the session's ``TimeZone``), elsewhere as naive UTC (SQLite). A naive value given is taken
    as UTC.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        aware = dialect.name in TZ_AWARE_DIALECTS
        return dialect.type_descriptor(DateTime(timezone=aware))

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value if dialect.name in TZ_AWARE_DIALECTS else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

#: One row per inspection; ``tested_png`` holds the tested image as inspected (greyscale, lossless).
inspections = Table(
    "inspections",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("defective", Boolean, nullable=False),
    Column("max_score", Float, nullable=False),
    Column("score_name", String(64), nullable=False),
    Column("threshold", Float, nullable=False),
    Column("shift_dy", Integer, nullable=False),
    Column("shift_dx", Integer, nullable=False),
    Column("shift_score", Float, nullable=False),
    Column("height", Integer, nullable=False),
    Column("width", Integer, nullable=False),
    Column("tile_count", Integer, nullable=False),
    Column("defective_tiles", Integer, nullable=False),
    Column("tiles", JSON, nullable=False),
    Column("tested_sha256", String(64), nullable=False),
    Column("reference_sha256", String(64), nullable=True),
    Column("board", String(200), nullable=True),
    Column("tested_filename", String(255), nullable=True),
    Column("reference_filename", String(255), nullable=True),
    Column("model_id", String(64), nullable=False),
    Column("seconds", Float, nullable=False),
    Column("tested_png", LargeBinary, nullable=True),
    Index("ix_inspections_created_at", "created_at"),
    Index("ix_inspections_verdict_created_at", "verdict", "created_at"),
)

#: One row per defect box a detector found in an inspection, in the order found (highest confidence first):
#: the box ``x1 y1 x2 y2`` in tested-image pixels (x2, y2 exclusive), the DeepPCB type name and code, the
#: detector's confidence.
detections = Table(
    "detections",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("inspection_id", String(36), ForeignKey("inspections.id"), nullable=False, index=True),
    Column("x1", Float, nullable=False),
    Column("y1", Float, nullable=False),
    Column("x2", Float, nullable=False),
    Column("y2", Float, nullable=False),
    Column("type", String(32), nullable=False),
    Column("code", Integer, nullable=False),
    Column("confidence", Float, nullable=False),
)

#: Every column but the stored image, and whether there is one: what lookup reads.
RECORD_COLUMNS = [
    *(c for c in inspections.c if c.name != "tested_png"),
    inspections.c.tested_png.is_not(None).label("has_image"),
]
#: Columns of the listing (no tiles).
SUMMARY_COLUMNS = [c for c in RECORD_COLUMNS if c.name != "tiles"]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=15000")
    finally:
        cur.close()


#: Key of the PostgreSQL advisory lock held while the tables are created (the bytes of "pcbsiam").
SCHEMA_LOCK = int.from_bytes(b"pcbsiam", "big")


def create_schema(engine: Engine, attempts: int = 3) -> None:
    """Create the tables and indexes missing from the database of ``engine``, safely from several processes.

    ``create_all`` looks for each table and then creates it: two processes starting at once both see none,
    and the second ``CREATE TABLE`` fails. On PostgreSQL the whole check-and-create runs in one transaction
    holding an advisory lock, so the second process waits, then finds the tables (DDL is transactional
    there). On other databases a failed attempt is retried, when it finds what the other process made.

    Raises:
        SQLAlchemyError: the tables could not be created (after ``attempts`` tries elsewhere than PostgreSQL).
    """
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK)))
            metadata.create_all(conn)
        return
    for attempt in range(1, attempts + 1):
        try:
            metadata.create_all(engine)
            return
        except (IntegrityError, ProgrammingError, OperationalError):
            if attempt == attempts:
                raise
            time.sleep(0.1 * attempt)


def open_database(url: str, create: bool = True) -> Engine:
    """An engine for ``url``; SQLite files get WAL and ``synchronous=FULL``, server databases a pool whose
    connections are checked before use.

    Args:
        url: any SQLAlchemy URL, e.g. ``sqlite:///inspections.db`` or ``postgresql+psycopg://user@host/db``.
        create: create the database file and the tables where missing (an older database gets the tables
            added since; existing tables are left as they are). A server database itself must exist.
    """
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            kwargs = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
        else:
            if create:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs = {"connect_args": {"check_same_thread": False, "timeout": 15}}
    else:
        # a server restarted, or a connection dropped by a proxy, would otherwise fail the next request
        kwargs = {"pool_pre_ping": True}
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    if create:
        create_schema(engine)
    return engine


def _detections_of(conn: Connection, inspection_id: str) -> list[dict[str, Any]]:
    """The detection records of an inspection, in the order they were written."""
    c = detections.c
    query = select(c.x1, c.y1, c.x2, c.y2, c.type, c.code, c.confidence).where(c.inspection_id == inspection_id)
    return [
        {"box": [r.x1, r.y1, r.x2, r.y2], "type": r.type, "code": r.code, "confidence": r.confidence}
        for r in conn.execute(query.order_by(c.id))
    ]


class StoreUnavailable(PcbsiamError):
    """The database cannot be read or written now (read-only, disk full, I/O error, connection lost)."""


#: Errors that mean the database is unavailable rather than that the code is wrong.
UNAVAILABLE = (OperationalError, InternalError, OSError)


def _reason(exc: BaseException) -> str:
    """The first line of the driver's message (no SQL, no links), at most 200 characters."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return (lines[0] if lines else type(orig).__name__)[:200]


@contextmanager
def unavailable_as(what: str) -> Iterator[None]:
    """Turn an :data:`UNAVAILABLE` error inside the block into :class:`StoreUnavailable` ``"<what>: <reason>"``."""
    try:
        yield
    except UNAVAILABLE as exc:
        raise StoreUnavailable(f"{what}: {_reason(exc)}") from exc


class InspectionStore:
    """Reads and writes inspection rows.

    Args:
        url: SQLAlchemy database URL.
        create: create the database and table where missing (a reader such as the load test passes False).

    Raises:
        PcbsiamError: the URL is invalid, its driver is missing, or the database cannot be opened.
    """

    def __init__(self, url: str, create: bool = True) -> None:
        self.url = url
        try:
            self.db = open_database(url, create)
        except (SQLAlchemyError, ValueError, OSError, ImportError) as exc:
            try:
                shown = make_url(url).render_as_string(hide_password=True)
            except (SQLAlchemyError, ValueError):
                shown = "(unparsable URL)"
            raise PcbsiamError(f"cannot open the inspection database {shown}: {_reason(exc)}") from exc

    def add(self, row: dict[str, Any]) -> None:
        """Insert one inspection row and its detection rows and commit them together (durably on SQLite)
        before returning.

        Args:
            row: the inspection's columns, and optionally ``detections``: records ``{"box": [x1, y1, x2, y2],
                "type": name, "code": int, "confidence": float}``, one row each in the ``detections`` table.

        Raises:
            StoreUnavailable: the database cannot be written (read-only, disk full, I/O error); nothing was stored.
        """
        row = dict(row)
        found = row.pop("detections", None) or []
        values = [
            {
                "inspection_id": row["id"],
                **dict(zip(("x1", "y1", "x2", "y2"), (float(v) for v in d["box"]), strict=True)),
                "type": d["type"],
                "code": int(d["code"]),
                "confidence": float(d["confidence"]),
            }
            for d in found
        ]
        with unavailable_as("the inspection database cannot be written"), self.db.begin() as conn:
            conn.execute(inspections.insert().values(**row))
            if values:
                conn.execute(detections.insert(), values)

    def get(self, inspection_id: str) -> dict[str, Any] | None:
        """The row of an inspection without its image, with its ``detections`` records, or ``None``."""
        with unavailable_as(READ_ERROR), self.db.connect() as conn:
            row = conn.execute(select(*RECORD_COLUMNS).where(inspections.c.id == inspection_id)).mappings().first()
            if row is None:
                return None
            return dict(row) | {"detections": _detections_of(conn, inspection_id)}

    def image(self, inspection_id: str) -> tuple[bool, dict[str, Any] | None, bytes | None]:
        """(found, row without image but with its ``detections``, stored tested PNG or ``None``) of an inspection."""
        with unavailable_as(READ_ERROR), self.db.connect() as conn:
            row = conn.execute(select(inspections).where(inspections.c.id == inspection_id)).mappings().first()
            if row is None:
                return False, None, None
            data = dict(row) | {"detections": _detections_of(conn, inspection_id)}
        png = data.pop("tested_png")
        data["has_image"] = png is not None
        return True, data, png

    def page(
        self,
        limit: int = 50,
        offset: int = 0,
        verdict: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Summaries (no tiles), newest first, and the number of rows matching the filters.

        Args:
            verdict: ``defective`` or ``pass``; ``None`` for both.
            since: keep rows created at or after this time.
            until: keep rows created before this time.
        """
        conds = []
        if verdict is not None:
            conds.append(inspections.c.verdict == verdict)
        if since is not None:
            conds.append(inspections.c.created_at >= since)
        if until is not None:
            conds.append(inspections.c.created_at < until)
        query = (
            select(*SUMMARY_COLUMNS)
            .where(*conds)
            .order_by(inspections.c.created_at.desc(), inspections.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with unavailable_as(READ_ERROR), self.db.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
            total = conn.execute(select(func.count()).select_from(inspections).where(*conds)).scalar_one()
        return rows, int(total)

    def missing(self, ids: Iterable[str]) -> list[str]:
        """The ids of ``ids`` that have no row."""
        wanted = list(dict.fromkeys(ids))
        found: set[str] = set()
        with unavailable_as(READ_ERROR), self.db.connect() as conn:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                found.update(conn.execute(select(inspections.c.id).where(inspections.c.id.in_(chunk))).scalars())
        return [i for i in wanted if i not in found]

    def check_writable(self, min_free_bytes: int = 0) -> None:
        """Raise :class:`StoreUnavailable` unless a row could be written now.

        Takes the write lock with a statement that deletes nothing, then rolls back (on SQLite that
        fails on a read-only file or folder, on a server database in a read-only transaction or
        without a connection); on an SQLite file, also needs ``min_free_bytes`` free on its disk.
        """
        with unavailable_as("the inspection database cannot be written"), self.db.connect() as conn:
            tx = conn.begin()
            try:
                conn.execute(inspections.delete().where(inspections.c.id == ""))
            finally:
                tx.rollback()
        folder = self._folder()
        if folder is not None and min_free_bytes > 0:
            with unavailable_as("the disk of the inspection database cannot be checked"):
                free = shutil.disk_usage(folder).free
            if free < min_free_bytes:
                raise StoreUnavailable(
                    f"the disk of the inspection database has {free / 2**20:.1f} MiB free, "
                    f"less than the {min_free_bytes / 2**20:.1f} MiB one inspection may need"
                )

    def _folder(self) -> Path | None:
        """The folder of an SQLite database file, ``None`` for other databases and in-memory SQLite."""
        url = make_url(self.url)
        database = url.database or ""
        if url.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
            return None
        return Path(database).expanduser().resolve().parent

    def close(self) -> None:
        """Release the connection pool."""
        self.db.dispose()
