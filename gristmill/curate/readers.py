"""Input readers: WARC/WET (plain, gzip per record, WARC/0.18), JSONL (.gz/.zst), Parquet and .html folders.

Every record of every input becomes one `Record`. Records that cannot be documents (requests,
revisits, non-HTML payloads, broken gzip members, undecodable bytes, bad JSON lines) carry a
`drop` reason instead of content, so the ledger accounts for them and nothing is skipped silently.
"""
from __future__ import annotations

import gzip
import io
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

from gristmill.curate import CurateError
from gristmill.curate.config import ReadersConfig

WARC_SUFFIXES = (".warc", ".warc.gz", ".wet", ".wet.gz", ".wat", ".wat.gz", ".arc", ".arc.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json.zst", ".ndjson", ".ndjson.gz")
PARQUET_SUFFIXES = (".parquet",)
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
HTML_MIMES = ("text/html", "application/xhtml+xml")

# WARC record types that are never documents -> the ledger reason for each.
_TYPE_REASONS = {"request": "request", "revisit": "revisit", "metadata": "metadata", "warcinfo": "warcinfo",
                 "resource": "resource", "continuation": "continuation"}
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.I)
_HTML_SNIFF = re.compile(rb"<(?:!doctype\s+html|html|head|body|title|meta|div|p)[\s>]", re.I)
# Share of undecodable bytes we accept (replaced by U+FFFD) before calling a page undecodable.
_MAX_BAD_BYTE_SHARE = 0.005


@dataclass(slots=True)
class Record:
    source: str  # the input file
    offset: int  # byte offset (WARC), line number from 1 (JSONL), row from 0 (Parquet), 0 (.html file)
    offset_kind: str  # "byte" | "line" | "row" | "file"
    id: str
    record_type: str  # WARC-Type, or "jsonl" / "parquet" / "html"
    url: str | None = None
    content: str = ""  # HTML (is_html) or plain text; empty when dropped
    is_html: bool = False
    raw_bytes: int = 0  # payload size as read (bytes)
    date: str | None = None
    drop: str | None = None  # the reader's reason when this record is no document
    detail: str | None = None  # e.g. the exception text behind a drop
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TaskUnit:
    """One datatrove task: one data file, or a slice of an .html folder."""

    format: str  # "warc" | "jsonl" | "parquet" | "html"
    paths: tuple[str, ...]
    root: str | None = None  # html slices: the folder the ids are relative to
    start: int = 0  # WARC byte range [start, end): the records that begin in it (a big file in parts)
    end: int | None = None

    @property
    def label(self) -> str:
        if self.end is not None or self.start:
            return f"{self.paths[0]} [{self.start}:{self.end if self.end is not None else ''}]"
        return self.paths[0] if len(self.paths) == 1 else f"{self.root} [{Path(self.paths[0]).name} ..]"


# ------------------------------------------------------------------------------------------------
# planning


def detect_format(path: Path) -> str | None:
    """'warc' | 'jsonl' | 'parquet' | 'html' from the name, else from the first bytes; None = unknown."""
    name = path.name.lower()
    for fmt, suffixes in (("warc", WARC_SUFFIXES), ("jsonl", JSONL_SUFFIXES), ("parquet", PARQUET_SUFFIXES),
                          ("html", HTML_SUFFIXES)):
        if name.endswith(suffixes):
            return fmt
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if head[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head)
        except zlib.error:
            return None
    if head[:4] == b"PAR1":
        return "parquet"
    s = head.lstrip()
    if s.startswith(b"WARC/"):
        return "warc"
    if s.startswith(b"{"):
        return "jsonl"
    if _HTML_SNIFF.search(head[:1024]):
        return "html"
    return None


def plan_units(paths: list[Path], cfg: ReadersConfig, split_bytes: int = 0) -> list[TaskUnit]:
    """Input paths (files or folders, in the order given) -> task units, deterministic order.

    A folder contributes its data files (one unit each, sorted) and its .html files (cut into units of
    `html_files_per_task`). A WARC file with one gzip member per record (or uncompressed) larger than
    `split_bytes` (> 0) is cut into byte ranges starting at records, one unit each, so one big file
    keeps several workers busy. A file of unknown type is an error rather than a silent skip.
    """
    units = _plan_files(paths, cfg)
    if split_bytes <= 0:
        return units
    out: list[TaskUnit] = []
    for u in units:
        points = warc_split_points(u.paths[0], split_bytes) if u.format == "warc" else None
        if not points or len(points) < 2:
            out.append(u)
            continue
        bounds = points + [None]
        out += [TaskUnit("warc", u.paths, None, a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    return out


def _plan_files(paths: list[Path], cfg: ReadersConfig) -> list[TaskUnit]:
    units: list[TaskUnit] = []
    unknown: list[str] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise CurateError(f"input {p} does not exist; check the --input path or glob")
        if p.is_file():
            fmt = detect_format(p)
            if fmt is None:
                unknown.append(str(p))
            else:
                units.append(TaskUnit(fmt, (str(p),), str(p.parent) if fmt == "html" else None))
            continue
        html_files: list[str] = []
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            if any(part.startswith(".") for part in f.relative_to(p).parts):
                continue  # hidden files and folders (editor swap files, .git)
            fmt = detect_format(f)
            if fmt == "html":
                html_files.append(str(f))
            elif fmt is None:
                unknown.append(str(f))
            else:
                units.append(TaskUnit(fmt, (str(f),)))
        n = cfg.html_files_per_task
        units += [TaskUnit("html", tuple(html_files[i:i + n]), str(p)) for i in range(0, len(html_files), n)]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise CurateError(f"cannot tell the format of {shown}: curate reads .warc(.gz), .wet(.gz), .jsonl(.gz/.zst), "
                          ".parquet and .html files; pass only those (a glob such as 'dump/*.warc.gz' helps)")
    return units


def read_unit(unit: TaskUnit, cfg: ReadersConfig) -> Iterator[Record]:
    """Every record of a task unit, in file order."""
    for path in unit.paths:
        if unit.format == "warc":
            yield from read_warc(path, cfg, unit.start, unit.end)
        elif unit.format == "jsonl":
            yield from read_jsonl(path, cfg)
        elif unit.format == "parquet":
            yield from read_parquet(path, cfg)
        elif unit.format == "html":
            yield read_html_file(path, unit.root, cfg)
        else:  # pragma: no cover - plan_units only makes the four above
            raise CurateError(f"{path}: unknown unit format {unit.format!r}")


# ------------------------------------------------------------------------------------------------
# decoding


def decode_html(payload: bytes, declared: str | None = None) -> tuple[str | None, str]:
    """Bytes of a page -> (text, encoding used), or (None, reason) when no encoding fits.

    Order: strict UTF-8 (right for most of the web, and a non-UTF-8 page rarely passes it by
    chance), then the declared charset (HTTP header, else <meta charset>), then cchardet's guess,
    then UTF-8 with replacement if under 0.5 % of the bytes are bad.
    """
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    candidates = []
    if declared:
        candidates.append(declared)
    m = _META_CHARSET.search(payload[:4096])
    if m:
        candidates.append(m.group(1).decode("ascii", "ignore"))
    try:
        import cchardet

        guess = cchardet.detect(payload[:200_000]).get("encoding")
        if guess:
            candidates.append(guess)
    except ImportError:  # pragma: no cover - faust-cchardet is a dependency
        pass
    for enc in candidates:
        enc = enc.strip().lower()
        if enc in ("utf-8", "utf8"):
            continue
        try:
            return payload.decode(enc), enc
        except (UnicodeDecodeError, LookupError):
            continue
    text = payload.decode("utf-8", errors="replace")
    if text.count("\ufffd") <= _MAX_BAD_BYTE_SHARE * max(len(payload), 1):
        return text, "utf-8-replace"
    return None, "undecodable"


def _mime_and_charset(content_type: str | None) -> tuple[str | None, str | None]:
    if not content_type:
        return None, None
    parts = [p.strip() for p in content_type.split(";")]
    mime = parts[0].lower() or None
    charset = None
    for p in parts[1:]:
        k, _, v = p.partition("=")
        if k.strip().lower() == "charset":
            charset = v.strip().strip("\"'") or None
    return mime, charset


def looks_like_html(payload: bytes) -> bool:
    return bool(_HTML_SNIFF.search(payload[:2048]))


# ------------------------------------------------------------------------------------------------
# WARC / WET


def _warc_record(rec, source: str, offset: int, cfg: ReadersConfig) -> Record:
    """One parsed warcio record (its payload read here) -> Record."""
    h = rec.rec_headers
    rtype = (rec.rec_type or "").lower()
    rid = h.get_header("WARC-Record-ID") or f"{Path(source).name}@{offset}"
    url = h.get_header("WARC-Target-URI") or h.get_header("uri") or None
    date = h.get_header("WARC-Date") or h.get_header("archive-date")
    r = Record(source=source, offset=offset, offset_kind="byte", id=rid, record_type=rtype, url=url, date=date)
    payload = rec.content_stream().read(cfg.max_record_bytes + 1)
    r.raw_bytes = len(payload)
    # The block ended before its Content-Length: the file was cut inside this record.
    short = getattr(rec.raw_stream, "limit", 0) if len(payload) <= cfg.max_record_bytes else 0
    if short:
        r.drop, r.detail = "truncated", f"{short} bytes of the record missing"
        return r
    if rtype in _TYPE_REASONS:
        r.drop = _TYPE_REASONS[rtype]
        return r
    if rtype not in ("response", "conversion"):
        r.drop = f"warc_type_{rtype or 'missing'}"
        return r
    if len(payload) > cfg.max_record_bytes:
        r.drop = "too_large"
        return r
    if cfg.drop_truncated_payloads and h.get_header("WARC-Truncated"):
        r.drop, r.detail = "payload_truncated", h.get_header("WARC-Truncated")
        return r
    if not payload.strip():
        r.drop = "empty"
        return r
    if rtype == "conversion":  # WET: text already extracted by the crawler
        text, enc = decode_html(payload)
        if text is None:
            r.drop = "undecodable"
            return r
        r.content, r.is_html = text, False
        lang = h.get_header("WARC-Identified-Content-Language")
        if lang:
            r.meta["wet_language"] = lang
        return r
    ctype = None
    status = None
    if rec.http_headers is not None:
        ctype = rec.http_headers.get_header("Content-Type")
        try:
            status = int((rec.http_headers.get_statuscode() or "0").split()[0])
        except (ValueError, IndexError):
            status = None
    if ctype is None:
        ctype = h.get_header("WARC-Identified-Payload-Type") or h.get_header("Content-Type")
        if ctype and ctype.startswith("application/http"):
            ctype = None
    mime, charset = _mime_and_charset(ctype)
    if cfg.require_http_ok and status is not None and not 200 <= status < 300:
        r.drop, r.detail = "http_status", str(status)
        return r
    if mime is not None and mime not in HTML_MIMES:
        if not (mime in ("text/plain", "application/octet-stream", "") and looks_like_html(payload)):
            r.drop, r.detail = "non_html", mime
            return r
    elif mime is None and not looks_like_html(payload):
        r.drop, r.detail = "non_html", "unknown"
        return r
    return _with_html(r, payload, charset)


def _with_html(r: Record, payload: bytes, charset: str | None = None) -> Record:
    """Decode an HTML payload into `r` (detected charset when none is declared), or mark it undecodable."""
    text, enc = decode_html(payload, charset)
    if text is None:
        r.drop = "undecodable"
        return r
    r.content, r.is_html = text, True
    r.meta["encoding"] = enc
    return r


def _is_record_start(fh: IO[bytes], pos: int, gz: bool) -> bool:
    """Does a WARC record (in its own gzip member when `gz`) start at byte `pos`?"""
    fh.seek(pos)
    head = fh.read(4096)
    if gz:
        try:
            head = zlib.decompressobj(31).decompress(head, 64)
        except zlib.error:
            return False
    head = head.lstrip(b"\r\n")
    return head.startswith(b"WARC/") and (gz or b"WARC-" in head[:400] or len(head) < 400)


def _next_start(fh: IO[bytes], after: int, gz: bool, size: int) -> int | None:
    """The first record start at or after byte `after` (a gzip member, or a line 'WARC/...'),
    checked by reading it, so gzip magic bytes inside compressed data are not mistaken for one."""
    marker = b"\x1f\x8b\x08" if gz else b"\nWARC/"
    pos = max(after - (0 if gz else 1), 0)
    while pos < size:
        fh.seek(pos)
        chunk = fh.read(1 << 20)
        if not chunk:
            return None
        i = chunk.find(marker)
        while i >= 0:
            cand = pos + i + (0 if gz else 1)
            if cand >= after and _is_record_start(fh, cand, gz):
                return cand
            i = chunk.find(marker, i + 1)
        pos += max(len(chunk) - len(marker) + 1, 1)
    return None


def warc_split_points(path: str, chunk_bytes: int) -> list[int] | None:
    """Byte offsets that cut a WARC file into ranges of about `chunk_bytes`, each starting at a record;
    None when the file cannot be read in ranges (whole-file gzip, ARC, too small)."""
    size = os.path.getsize(path)
    if chunk_bytes <= 0 or size <= chunk_bytes:
        return None
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
        if not _is_record_start(fh, 0, gz):
            return None
        if gz:  # per-record gzip? the second member must start within the first few MB
            second = _next_start(fh, 1, gz, min(size, 1 << 24))
            if second is None:
                return None
        points = [0]
        while True:
            nxt = _next_start(fh, points[-1] + chunk_bytes, gz, size)
            if nxt is None:
                return points
            points.append(nxt)


def read_warc(path: str, cfg: ReadersConfig, start: int = 0, end: int | None = None) -> Iterator[Record]:
    """Records of a WARC/WET/WAT file whose first byte lies in [start, end) (the whole file by default).

    A broken gzip member or malformed record becomes one record with drop 'truncated' / 'malformed';
    reading resumes at the next record start after it, so one bad record never hides the rest.
    """
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    try:
        fh = open(path, "rb")
    except OSError as e:
        yield Record(source=path, offset=0, offset_kind="byte", id=f"{Path(path).name}@0", record_type="file",
                     drop="unreadable_file", detail=str(e))
        return
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:  # one ledger row, so that an input of empty files is never a silently empty output
            yield Record(source=path, offset=0, offset_kind="byte", id=f"{Path(path).name}@0", record_type="file",
                         drop="empty_file", detail="the file is empty (0 bytes)")
            return
        stop = size if end is None else min(end, size)
        gz = fh.read(2) == b"\x1f\x8b"
        base = start if start == 0 else _next_start(fh, start, gz, size)
        while base is not None and base < stop:
            fh.seek(base)
            it = ArchiveIterator(fh)
            rec_start = base
            try:
                for rec in it:
                    rec_start = it.offset  # absolute: warcio starts counting at fh.tell()
                    if rec_start >= stop:
                        return  # the next range's first record
                    yield _warc_record(rec, path, rec_start, cfg)
                    rec_start = None  # between records: an error now belongs to the next record
                # warcio ends quietly at a cut gzip member: bytes left after the last record are one
                # truncated record, and reading goes on after it in case more members follow.
                last = it.offset if it.offset is not None else size
                if last < stop and fh.seek(last) is not None and fh.read(min(size - last, 1 << 20)).strip(b"\r\n\x00"):
                    yield Record(source=path, offset=last, offset_kind="byte", id=f"{Path(path).name}@{last}",
                                 record_type="broken", drop="truncated",
                                 detail="bytes after the last complete record")
                    base = _next_start(fh, last + 1, gz, size)
                    continue
                base = None
            except (ArchiveLoadFailed, EOFError, zlib.error, OSError, ValueError, UnicodeDecodeError,
                    IndexError, KeyError, TypeError) as e:
                bad = rec_start if rec_start is not None else (it.offset if it.offset is not None else base)
                if bad >= stop:
                    return
                reason = "truncated" if isinstance(e, (EOFError, zlib.error)) or "truncat" in str(e).lower() \
                    or "gzip" in str(e).lower() else "malformed"
                yield Record(source=path, offset=bad, offset_kind="byte", id=f"{Path(path).name}@{bad}",
                             record_type="broken", drop=reason, detail=f"{type(e).__name__}: {e}"[:300])
                base = _next_start(fh, bad + 1, gz, size)


# ------------------------------------------------------------------------------------------------
# JSONL / Parquet / HTML


def _open_text_stream(path: str) -> IO[bytes]:
    lower = path.lower()
    raw = open(path, "rb")
    if lower.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if lower.endswith(".zst"):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    return raw


def _doc_fields(obj: dict, cfg: ReadersConfig, source: str, where: int) -> tuple[str, str | None]:
    rid = obj.get(cfg.id_field) if cfg.id_field else None
    rid = str(rid) if rid not in (None, "") else f"{Path(source).name}:{where}"
    url = obj.get(cfg.url_field) if cfg.url_field else None
    if url is None and isinstance(obj.get("metadata"), dict):
        url = obj["metadata"].get("url")
    return rid, (str(url) if url is not None else None)


def _text_record(r: Record, value, cfg: ReadersConfig) -> Record:
    if not isinstance(value, str):
        r.drop = "missing_text" if value is None else "text_not_string"
        r.detail = f"field {cfg.text_field!r}"
        return r
    r.raw_bytes = len(value.encode("utf-8"))
    if r.raw_bytes > cfg.max_record_bytes:
        r.drop = "too_large"
        return r
    if not value.strip():
        r.drop = "empty"
        return r
    r.content, r.is_html = value, cfg.content == "html"
    return r


def read_jsonl(path: str, cfg: ReadersConfig) -> Iterator[Record]:
    import orjson

    line_no = 0
    try:
        f = _open_text_stream(path)
    except OSError as e:
        yield Record(source=path, offset=0, offset_kind="line", id=f"{Path(path).name}:0", record_type="file",
                     drop="unreadable_file", detail=str(e))
        return
    records = 0
    with f:
        try:
            for line in f:
                line_no += 1
                if not line.strip():
                    continue
                records += 1
                r = Record(source=path, offset=line_no, offset_kind="line", id=f"{Path(path).name}:{line_no}",
                           record_type="jsonl")
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as e:
                    r.drop, r.detail, r.raw_bytes = "bad_json", str(e)[:200], len(line)
                    yield r
                    continue
                if not isinstance(obj, dict):
                    r.drop, r.detail, r.raw_bytes = "bad_json", f"a JSON {type(obj).__name__}, not an object", len(line)
                    yield r
                    continue
                r.id, r.url = _doc_fields(obj, cfg, path, line_no)
                yield _text_record(r, obj.get(cfg.text_field), cfg)
        except (EOFError, zlib.error, OSError, ValueError) as e:
            # a truncated .gz/.zst: what came before is read, the rest of the file is one ledger row
            yield Record(source=path, offset=line_no + 1, offset_kind="line", id=f"{Path(path).name}:{line_no + 1}",
                         record_type="broken", drop="truncated", detail=f"{type(e).__name__}: {e}"[:300])
            return
    if records == 0:  # an empty or blank file: one ledger row instead of a silently empty output
        yield Record(source=path, offset=0, offset_kind="line", id=f"{Path(path).name}:0", record_type="file",
                     drop="empty_file", detail=f"no records: the file is empty or blank ({line_no} lines)")


def check_parquet_columns(paths: list[str | Path], cfg: ReadersConfig) -> None:
    """Before any task starts: every Parquet input has the text column (a worker's traceback would come first
    otherwise). A file whose footer does not read is left to the reader (a ledger row, unreadable_file)."""
    import pyarrow.parquet as pq

    for path in paths:
        if not str(path).endswith(".parquet"):
            continue
        try:
            names = set(pq.read_schema(path).names)
        except Exception:  # noqa: BLE001 - broken footers become a ledger row in read_parquet
            continue
        if cfg.text_field not in names:
            raise CurateError(f"{path}: no column {cfg.text_field!r} (columns: {', '.join(sorted(names))}); "
                              f"set --set curate.readers.text_field=<column>")


def read_parquet(path: str, cfg: ReadersConfig) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a broken footer
        yield Record(source=path, offset=0, offset_kind="row", id=f"{Path(path).name}#0", record_type="file",
                     drop="unreadable_file", detail=f"{type(e).__name__}: {e}"[:300])
        return
    names = set(pf.schema_arrow.names)
    if cfg.text_field not in names:
        raise CurateError(f"{path}: no column {cfg.text_field!r} (columns: {', '.join(sorted(names))}); "
                          f"set --set curate.readers.text_field=<column>")
    cols = [c for c in (cfg.text_field, cfg.id_field, cfg.url_field) if c and c in names]
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=1024, columns=sorted(set(cols))):
            for obj in batch.to_pylist():
                r = Record(source=path, offset=row, offset_kind="row", id="", record_type="parquet")
                r.id, r.url = _doc_fields(obj, cfg, path, row)
                yield _text_record(r, obj.get(cfg.text_field), cfg)
                row += 1
    except Exception as e:
        yield Record(source=path, offset=row, offset_kind="row", id=f"{Path(path).name}#{row}", record_type="broken",
                     drop="truncated", detail=f"{type(e).__name__}: {e}"[:300])


def read_html_file(path: str, root: str | None, cfg: ReadersConfig) -> Record:
    rel = os.path.relpath(path, root) if root else Path(path).name
    r = Record(source=path, offset=0, offset_kind="file", id=rel, record_type="html")
    try:
        with open(path, "rb") as f:
            payload = f.read(cfg.max_record_bytes + 1)
    except OSError as e:
        r.drop, r.detail = "unreadable_file", str(e)
        return r
    r.raw_bytes = len(payload)
    if len(payload) > cfg.max_record_bytes:
        r.drop = "too_large"
        return r
    if not payload.strip():
        r.drop = "empty"
        return r
    return _with_html(r, payload)
