"""Readers that turn one export (CSV, Excel sheet, Parquet file or SQL query)
into a table of raw cells with the line each row came from.

Readers do not interpret values: CSV cells stay text ("" when blank), while
Excel, Parquet and SQL cells keep the type their format gives them. The
generic loader parses them afterwards, so every reader feeds the same
number and date parsers and the same quarantine.

CSV files are read by pyarrow when every record has as many cells as the
header, and by Python's csv module otherwise. Both give the same cells and
line numbers. Line numbers count physical lines with the header as line 1,
so a quoted value that spans lines moves the numbers of later records.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cockpit.errors import IngestError

logger = logging.getLogger(__name__)

#: Delimiters that `delimiter: auto` chooses from.
SNIFFED_DELIMITERS = ",;\t|"

#: Bytes of the file that `delimiter: auto` looks at.
SNIFF_BYTES = 64 * 1024

_UTF8_NAMES = {"utf-8", "utf8", "utf-8-sig", "utf_8", "utf_8_sig"}


@dataclass(frozen=True)
class RawTable:
    """The cells of one export, before any parsing.

    `frame` has one column per header name. `lines` gives, for each row, its
    line in the file (CSV: physical line, header is line 1; Excel: sheet row
    number; Parquet and SQL: 1-based row position). `source_file` names the
    file (with `#sheet` for Excel, `#input` for SQL) in the load log and the
    quarantine, and `checksum` is the SHA-256 of the bytes or query result.
    """

    name: str
    source_file: str
    header: list[str]
    frame: pd.DataFrame
    lines: pd.Series
    checksum: str
    path: Path | None = None


def missing_columns(header: Iterable[str], required: Iterable[str]) -> list[str]:
    """Return the names of `required` that `header` lacks, in their given order."""
    found = set(header)
    return [name for name in required if name not in found]


def missing_columns_message(
    source_file: str, header: Sequence[str], missing: Sequence[str]
) -> str:
    """Describe missing columns, naming every one and the columns the file has."""
    return (
        f"{source_file}: missing required column(s) {', '.join(missing)}. "
        f"The file has {', '.join(header) or 'no columns'}. "
        "Rename the columns in the export or map them in the source YAML"
    )


def require_columns(path: Path, header: Iterable[str], required: Iterable[str]) -> None:
    """Raise IngestError naming every column of `required` missing from `header`."""
    found = list(header)
    missing = missing_columns(found, required)
    if missing:
        raise IngestError(missing_columns_message(str(path), found, missing))


# --- CSV -------------------------------------------------------------------


def read_csv_table(
    path: str | Path,
    *,
    name: str | None = None,
    encoding: str = "utf-8",
    delimiter: str = ",",
    quotechar: str = '"',
) -> RawTable:
    """Read a delimited text file; every cell is text and blanks are "".

    `encoding` is any Python codec name; a UTF-8 byte-order mark is dropped.
    `delimiter` is one character or "auto" to pick one of `, ; tab |` from
    the start of the file. Lines may end in LF, CRLF or CR. Empty lines are
    skipped, and a record shorter than the header is padded with "".

    Raises IngestError when the file cannot be decoded with `encoding`, has
    no header, repeats a header name, or has records with more cells than
    the header (all such lines are listed).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"cannot read {path}: {exc}") from exc
    checksum = hashlib.sha256(data).hexdigest()
    utf8 = _to_utf8(data, encoding, path)
    if delimiter == "auto":
        delimiter = _sniff_delimiter(utf8, path)
    header, header_line = _read_header(utf8, delimiter, quotechar, path)

    frame = _read_with_arrow(utf8, header, header_line, delimiter, quotechar, path)
    if frame is not None:
        lines = _record_lines(utf8, header_line, len(frame))
        if lines is None:
            lines = _record_lines_by_parsing(utf8, delimiter, quotechar)
    else:
        frame, lines = _read_with_python(utf8, header, delimiter, quotechar, path)
    logger.debug("read %d records from %s", len(frame), path)
    return RawTable(
        name=name or path.stem,
        source_file=str(path),
        header=header,
        frame=frame,
        lines=pd.Series(lines, dtype="int64"),
        checksum=checksum,
        path=path,
    )


def _to_utf8(data: bytes, encoding: str, path: Path) -> memoryview:
    """Return the file as UTF-8 bytes without a byte-order mark."""
    if encoding.lower().replace("_", "-") in _UTF8_NAMES:
        view = memoryview(data)
        if data.startswith(codecs.BOM_UTF8):
            view = view[len(codecs.BOM_UTF8) :]
        try:
            codecs.utf_8_decode(view, "strict", True)
        except UnicodeDecodeError as exc:
            bad = bytes(view[exc.start : exc.start + 1]).hex()
            raise IngestError(
                f"{path}: not valid UTF-8 text at byte {exc.start} (0x{bad}). "
                "Save the export as UTF-8, or set encoding: windows-1252 in the "
                "source YAML if it uses that code page"
            ) from exc
        return view
    try:
        text = data.decode(encoding)
    except LookupError as exc:
        raise IngestError(
            f"{path}: unknown encoding {encoding!r}; use a Python codec name such "
            "as utf-8, windows-1252 or latin-1"
        ) from exc
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        raise IngestError(
            f"{path}: not valid {encoding} text at byte {exc.start} (0x{bad}). "
            "Set the file's real encoding in the source YAML, or save it as UTF-8"
        ) from exc
    return memoryview(text.lstrip("\ufeff").encode("utf-8"))


def _sniff_delimiter(utf8: memoryview, path: Path) -> str:
    sample = bytes(utf8[:SNIFF_BYTES]).decode("utf-8", errors="ignore")
    try:
        return csv.Sniffer().sniff(sample, delimiters=SNIFFED_DELIMITERS).delimiter
    except csv.Error as exc:
        raise IngestError(
            f"{path}: cannot tell the delimiter from the first lines; set "
            f"delimiter to one of {list(SNIFFED_DELIMITERS)} in the source YAML"
        ) from exc


def _read_header(
    utf8: memoryview, delimiter: str, quotechar: str, path: Path
) -> tuple[list[str], int]:
    """Return the stripped header names and the header's line number."""
    text = io.TextIOWrapper(io.BytesIO(utf8), encoding="utf-8", newline="")
    reader = csv.reader(text, delimiter=delimiter, quotechar=quotechar)
    try:
        for record in reader:
            if record:
                header = [cell.strip() for cell in record]
                break
        else:
            raise IngestError(f"{path}: the file is empty; expected a header line")
    except csv.Error as exc:
        raise IngestError(
            f"{path}: malformed CSV header ({exc}); check its quoting"
        ) from exc
    repeated = sorted({cell for cell in header if header.count(cell) > 1})
    if repeated:
        raise IngestError(
            f"{path}: header repeats column(s) {', '.join(repeated)}; "
            "rename them so that each column name is unique"
        )
    return header, reader.line_num


def _read_with_arrow(
    utf8: memoryview,
    header: list[str],
    header_line: int,
    delimiter: str,
    quotechar: str,
    path: Path,
) -> pd.DataFrame | None:
    """Read the records with pyarrow; None when a record has the wrong width."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [f"c{i}" for i in range(len(header))]
    wrong_width: list[object] = []

    def note_invalid(row: object) -> str:
        wrong_width.append(row)
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.py_buffer(utf8),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=header_line),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter,
                quote_char=quotechar,
                newlines_in_values=True,
                invalid_row_handler=note_invalid,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        # Odd quoting that pyarrow rejects is left to the csv module, which
        # reports the line.
        logger.debug("%s: pyarrow could not read the file (%s)", path, exc)
        return None
    if wrong_width:
        return None
    frame = table.to_pandas()
    frame.columns = header
    return frame


def _record_lines(
    utf8: memoryview, header_line: int, records: int
) -> np.ndarray | None:
    """Line numbers of the records, or None when a record spans several lines."""
    data = np.frombuffer(utf8, dtype=np.uint8)
    terminator = 10 if (data == 10).any() else 13
    ends = np.flatnonzero(data == terminator)
    starts = np.concatenate(([0], ends + 1))
    stops = np.concatenate((ends, [len(data)]))
    lengths = stops - starts
    carriage = np.zeros(len(starts), dtype=bool)
    single = lengths == 1
    carriage[single] = data[starts[single]] == 13
    non_empty = np.flatnonzero((lengths > 0) & ~carriage) + 1
    record_lines = non_empty[non_empty > header_line]
    if len(record_lines) != records:
        return None
    return record_lines


def _record_lines_by_parsing(
    utf8: memoryview, delimiter: str, quotechar: str
) -> list[int]:
    """Line numbers of the records, found by parsing the file with the csv module."""
    text = io.TextIOWrapper(io.BytesIO(utf8), encoding="utf-8", newline="")
    reader = csv.reader(text, delimiter=delimiter, quotechar=quotechar)
    starts: list[int] = []
    seen_header = False
    start = 1
    for record in reader:
        if record:
            if seen_header:
                starts.append(start)
            seen_header = True
        start = reader.line_num + 1
    return starts


def _read_with_python(
    utf8: memoryview, header: list[str], delimiter: str, quotechar: str, path: Path
) -> tuple[pd.DataFrame, list[int]]:
    """Read the records with the csv module, padding short ones."""
    text = io.TextIOWrapper(io.BytesIO(utf8), encoding="utf-8", newline="")
    reader = csv.reader(text, delimiter=delimiter, quotechar=quotechar)
    records: list[list[str]] = []
    starts: list[int] = []
    seen_header = False
    start = 1
    try:
        for record in reader:
            if record:
                if seen_header:
                    records.append(record)
                    starts.append(start)
                seen_header = True
            start = reader.line_num + 1
    except csv.Error as exc:
        raise IngestError(
            f"{path}: malformed CSV near line {reader.line_num} ({exc}); check its quoting"
        ) from exc

    width = len(header)
    too_long = [
        (line, len(record))
        for line, record in zip(starts, records, strict=True)
        if len(record) > width
    ]
    if too_long:
        examples = ", ".join(f"line {line} has {count}" for line, count in too_long[:5])
        raise IngestError(
            f"{path}: {len(too_long)} record(s) have more cells than the "
            f"{width} header columns ({examples}); quote values that contain "
            "the delimiter"
        )
    padded = [record + [""] * (width - len(record)) for record in records]
    frame = pd.DataFrame(padded, columns=header, dtype="str")
    if not padded:
        frame = pd.DataFrame({name: pd.Series([], dtype="str") for name in header})
    return frame, starts


# --- Excel, Parquet, SQL ------------------------------------------------------


def excel_sheet_names(path: str | Path) -> list[str]:
    """Return the sheet names of a workbook (.xls or .xlsx)."""
    try:
        with pd.ExcelFile(path) as workbook:
            return [str(sheet) for sheet in workbook.sheet_names]
    except (OSError, ValueError) as exc:
        raise IngestError(f"cannot open workbook {path}: {exc}") from exc


def read_excel_table(
    path: str | Path, sheet: str, *, name: str | None = None, header_row: int = 1
) -> RawTable:
    """Read one sheet of a workbook; `header_row` is the sheet row of the header.

    Cells keep the type Excel stored: text, numbers, or datetimes for cells
    formatted as dates. Blank cells are None, and rows that are blank in
    every cell are skipped. `lines` are sheet row numbers.

    Raises IngestError when the workbook cannot be read or lacks the sheet
    (the message lists the sheets it has).
    """
    path = Path(path)
    sheets = excel_sheet_names(path)
    if sheet not in sheets:
        raise IngestError(
            f"{path}: no sheet named {sheet!r}; the workbook has {', '.join(sheets)}"
        )
    try:
        cells = pd.read_excel(path, sheet_name=sheet, header=None, dtype=object)
    except (OSError, ValueError) as exc:
        raise IngestError(f"cannot read sheet {sheet!r} of {path}: {exc}") from exc
    cells = cells.astype(object).where(cells.notna(), None)
    rows = cells.index.to_numpy() + 1
    header_at = np.flatnonzero(rows == header_row)
    if len(header_at) == 0:
        raise IngestError(
            f"{path} sheet {sheet!r}: row {header_row} is empty; expected the header"
        )
    top = int(header_at[0])
    header = [
        "" if cell is None else str(cell).strip() for cell in cells.iloc[top].tolist()
    ]
    while header and header[-1] == "":
        header.pop()
    body = cells.iloc[top + 1 :, : len(header)]
    filled = body.notna().any(axis=1).to_numpy()
    body = body[filled]
    frame = pd.DataFrame(body.to_numpy(), columns=header, dtype=object)
    repeated = sorted({cell for cell in header if header.count(cell) > 1})
    if repeated:
        raise IngestError(
            f"{path} sheet {sheet!r}: header repeats column(s) {', '.join(repeated)}; "
            "rename them so that each column name is unique"
        )
    return RawTable(
        name=name or sheet,
        source_file=f"{path}#{sheet}",
        header=header,
        frame=frame,
        lines=pd.Series(rows[top + 1 :][filled], dtype="int64"),
        checksum=_file_checksum(path),
        path=path,
    )


def read_parquet_table(path: str | Path, *, name: str | None = None) -> RawTable:
    """Read a Parquet file; columns keep their stored types and lines count from 1."""
    path = Path(path)
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise IngestError(f"cannot read Parquet file {path}: {exc}") from exc
    frame.columns = [str(column).strip() for column in frame.columns]
    return RawTable(
        name=name or path.stem,
        source_file=str(path),
        header=list(frame.columns),
        frame=frame.reset_index(drop=True),
        lines=pd.Series(np.arange(len(frame)) + 1, dtype="int64"),
        checksum=_file_checksum(path),
        path=path,
    )


def read_sql_table(url: str, query: str, *, name: str) -> RawTable:
    """Run `query` through SQLAlchemy on the database at `url` and return its rows.

    `source_file` is the URL with the password hidden, followed by `#name`.
    The checksum covers the column names and every value, so an unchanged
    result has an unchanged checksum.

    Raises IngestError when the URL is invalid, the driver is missing, or
    the database rejects the connection or the query.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise IngestError(
            f"invalid database URL for {name}: {exc}. Write it as "
            "dialect+driver://user@host:port/database"
        ) from exc
    safe_url = parsed.render_as_string(hide_password=True)
    try:
        engine = create_engine(parsed)
    except (ArgumentError, ImportError) as exc:
        raise IngestError(
            f"cannot use database {safe_url}: {exc}. Install the driver the URL names"
        ) from exc
    try:
        with engine.connect() as connection:
            frame = pd.read_sql_query(text(query), connection)
    except (SQLAlchemyError, pd.errors.DatabaseError) as exc:
        # pandas wraps the SQLAlchemy error; report the driver's own message.
        cause = exc.__cause__ if isinstance(exc.__cause__, SQLAlchemyError) else exc
        detail = str(getattr(cause, "orig", None) or cause).strip().splitlines()[0]
        raise IngestError(
            f"query {name!r} on {safe_url} failed: {type(cause).__name__}: {detail}. "
            "Check the query and that the server is up"
        ) from exc
    finally:
        engine.dispose()
    frame.columns = [str(column).strip() for column in frame.columns]
    digest = hashlib.sha256("\x1f".join(frame.columns).encode("utf-8"))
    if len(frame):
        hashes = pd.util.hash_pandas_object(frame.astype(str), index=False)
        digest.update(hashes.to_numpy().tobytes())
    return RawTable(
        name=name,
        source_file=f"{safe_url}#{name}",
        header=list(frame.columns),
        frame=frame,
        lines=pd.Series(np.arange(len(frame)) + 1, dtype="int64"),
        checksum=digest.hexdigest(),
    )


def _file_checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
