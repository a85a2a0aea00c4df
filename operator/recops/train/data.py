"""Shop data in, clean splits out: loading, field mapping, cleaning, pseudonymisation, splitting.

`prepare(dataset, task)` reads the data a FineTuneJob names (`DatasetSpec`), maps its columns to
roles, cleans it step by step (each step counted in a `CleaningReport`), replaces user IDs by
salted pseudonyms, and splits it into train, validation and test so that no group (query or
user) straddles two splits. The clear user IDs live only in memory while the split is assigned;
they never reach the returned frames or the report.

Cleaning steps, in order (a step switched off in `dataset.cleaning` is not listed):
  duplicates            rows equal in every column (retried log writes, double exports)
  feedback_merged       event logs only: feedback rows merged into their impression
  missing_fields        no product id, no product text, no event (or label); no time when split by time
  outliers_text_length  product text shorter than minTextLength or longer than maxTextLength; a
                        query or user context longer than maxTextLength
  unknown_events        events missing from eventGrades (kept with grade 0 when dropUnknownEvents is off)
  impossible_values     labels that are not finite non-negative numbers; times that cannot be parsed
                        or lie before 1970
  before_since          rows older than dataset.since (or without a time when since is set)
  max_rows              rows beyond dataset.maxRows, the oldest first (timed data)
  max_rows_random_sample  rows beyond dataset.maxRows, untimed data: a random sample seeded by
                        dataset.split.seed is kept (the first rows of an export are often sorted)

With `dataset.since`, whole event-log partitions (`dt=YYYY-MM-DD[/hour=HH]`) that end before it
are not even read.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from recops import uris
from recops.api import contracts
from recops.train.errors import DataError, one_line

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from recops.api.finetunejob import DatasetSpec

# Columns of every prepared frame, in this order. ratings: the user's earlier events (_with_ratings).
COLUMNS = ("group", "context", "query", "user", "product_id", "product_text", "grade", "label", "timestamp", "explored",
           "propensity", "ratings")
EARLIER_COLUMNS = ("user", "product_id", "grade", "label")
SPLITS = ("train", "validation", "test")
TASKS = ("click-through", "relevance", "embedding", "domain-pretrain")
# The request id of the serving event log: feedback rows join their impression on it.
REQUEST_ID = "request_id"
EVENT_LOG_TIMESTAMP = "ts"
# Impressions of the event log's exploration slice (recops.serve.exploration): random candidates in a random order.
EXPLORED = "explored"
# What the event log says of each impression: the probability that the serving policy showed it there (NaN: unknown).
PROPENSITY = "propensity"
SERVED_BY = "model_version"  # the model that ranked a logged response
IMPRESSION = "impression"
# Extensions of the formats `datasets` reads; compressed files keep their inner extension.
FORMAT_EXTENSIONS = {
    "parquet": (".parquet", ".pq"),
    "jsonl": (".jsonl", ".json", ".ndjson"),
    "csv": (".csv", ".tsv"),
}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zstd")
BUILDERS = {"parquet": "parquet", "jsonl": "json", "csv": "csv"}
# ml-100k ratings as shop events: 4 and 5 stars are positive for click-through (55% of rows),
# and the grades keep the order for relevance.
MOVIELENS_EVENTS = {1: IMPRESSION, 2: IMPRESSION, 3: IMPRESSION, 4: "click", 5: "purchase"}
_GLOB_CHARS = re.compile(r"[*?\[]")
_WHITESPACE = re.compile(r"\s+")


# --- results ------------------------------------------------------------------------------
@dataclass
class CleaningReport:
    """What cleaning did, every step counted. Holds counts only: never an ID or a row."""

    rows_read: int
    steps: list[tuple[str, int]]  # (step, rows dropped), in the order applied
    rows_kept: int
    pseudonymised_users: int
    split_by: str = ""
    split_rows: dict[str, int] = field(default_factory=dict)
    split_groups: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rowsRead": self.rows_read,
            "steps": [{"step": name, "dropped": dropped} for name, dropped in self.steps],
            "rowsKept": self.rows_kept,
            "pseudonymisedUsers": self.pseudonymised_users,
            "splitBy": self.split_by,
            "splitRows": dict(self.split_rows),
            "splitGroups": dict(self.split_groups),
        }

    def to_markdown(self) -> str:
        lines = [
            "| step | rows dropped |",
            "|---|---:|",
            f"| rows read | {self.rows_read} |",
            *(f"| {name} | {dropped} |" for name, dropped in self.steps),
            f"| **rows kept** | **{self.rows_kept}** |",
            "",
            f"Pseudonymised users: {self.pseudonymised_users}.",
        ]
        if self.split_rows:
            parts = ", ".join(
                f"{name} {self.split_rows.get(name, 0)} rows / {self.split_groups.get(name, 0)} groups"
                for name in SPLITS
            )
            lines.append(f"Split by {self.split_by}: {parts}.")
        return "\n".join(lines)


@dataclass
class PreparedData:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    report: CleaningReport
    fingerprint: str  # sha256 of the cleaned data and its split; independent of the salt
    max_grade: float  # the largest label value the task can have (1.0 for binary tasks)
    # Logged by `recops serve` (_served_log): ranked by a served model; column `explored` marks the exploration slice.
    logged: bool = False
    # Timed rows that dataset.maxRows left out, all older than every kept row (EARLIER_COLUMNS): item and user
    # statistics may use them without seeing a held-out label or the future; None when there are none.
    earlier: pd.DataFrame | None = None

    def product_texts(self) -> set[str]:
        """Every split's product texts: the corpus of BM25's statistics (no labels, so no leak)."""
        return {*self.train["product_text"], *self.validation["product_text"], *self.test["product_text"]}

    def statistics_rows(self) -> pd.DataFrame:
        """The rows that item popularity and the user offset's shrinkage are estimated from, for the fusion and
        the popularity baseline alike: the train split and the older rows before every split."""
        import pandas as pd

        train = self.train[list(EARLIER_COLUMNS)]
        if self.earlier is None or self.earlier.empty:
            return train
        return pd.concat([self.earlier[list(EARLIER_COLUMNS)], train], ignore_index=True)

    def split(self, name: str) -> pd.DataFrame:
        frame: pd.DataFrame = getattr(self, name)
        return frame


# --- loading ------------------------------------------------------------------------------
def _offline() -> None:
    # Nothing may be downloaded at run time; datasets reads these when it is imported.
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _format_of(path: str) -> str | None:
    name = path.lower()
    for suffix in COMPRESSIONS:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    for fmt, extensions in FORMAT_EXTENSIONS.items():
        if name.endswith(extensions):
            return fmt
    return None


def _is_hidden(path: str) -> bool:
    # Spark/Hadoop markers (_SUCCESS), dot files and partial uploads are not data.
    return any(part.startswith((".", "_")) for part in path.rstrip("/").split("/")[-1:])


def _list_files(uri: str) -> tuple[list[str], dict[str, Any] | None]:
    """The data files a URI names (a file, a directory of partitions, or a glob), as paths or
    URLs `datasets` can open, and the fsspec storage options for remote ones."""
    try:
        fs, path = uris.filesystem(uri)
    except uris.UriError as error:
        raise DataError(f"dataset.uri: {error}") from error
    except ImportError as error:
        raise DataError(f"cannot read {uri}: {one_line(error)}") from error
    remote = uris.local_path(uri) is None
    storage_options = uris.s3_storage_options() if remote else None
    try:
        if _GLOB_CHARS.search(path):
            found = fs.glob(path, detail=True)
            sizes = {name: info.get("size") for name, info in found.items() if info.get("type") != "directory"}
        elif fs.isdir(path):
            found = fs.find(path, detail=True)
            sizes = {name: info.get("size") for name, info in found.items() if info.get("type") != "directory"}
        elif fs.exists(path):
            sizes = {path: fs.size(path)}
        else:
            raise DataError(f"no data at {uri}: the path does not exist")
    except DataError:
        raise
    except Exception as error:  # fsspec backends raise many types (PermissionError, ClientError, ...)
        raise DataError(f"cannot read {uri}: {type(error).__name__}: {one_line(error)}") from error
    files = sorted(name for name, size in sizes.items() if not _is_hidden(name) and size != 0)
    if not files:
        raise DataError(f"no data at {uri}: no non-empty files")
    if remote:
        files = [f"s3://{name}" for name in files]
    return files, storage_options


def _infer_format(uri: str, files: list[str], wanted: str) -> tuple[str, list[str]]:
    if wanted != "auto":
        matching = [name for name in files if _format_of(name) == wanted]
        if len(files) == 1:
            return wanted, files  # one file: trust the stated format, whatever its name
        if not matching:
            raise DataError(f"no {wanted} files at {uri} (found e.g. {files[0].rsplit('/', 1)[-1]})")
        return wanted, matching
    formats = {_format_of(name) for name in files} - {None}
    if not formats:
        raise DataError(f"cannot infer the format of {uri}: no .parquet, .jsonl, .json or .csv files; set dataset.format")
    if len(formats) > 1:
        raise DataError(f"{uri} mixes formats ({', '.join(sorted(str(f) for f in formats))}); set dataset.format")
    fmt = formats.pop()
    assert fmt is not None
    return fmt, [name for name in files if _format_of(name) == fmt]


def _fetch(urls: list[str], storage_options: dict[str, Any], into: str, label: str) -> list[str]:
    """Copy remote (s3://) files into a local folder. `datasets` runs offline (nothing may be
    downloaded from a hub), and its offline mode refuses every remote URL, so the files come
    through fsspec, with the AWS_* credentials of the Contracts, and datasets reads them locally."""
    import fsspec

    fs = fsspec.filesystem("s3", **storage_options)
    local = []
    for index, url in enumerate(urls):
        # Keep the name (its extension tells the format); the index keeps partitions apart.
        target = f"{into}/{index:06d}-{url.rsplit('/', 1)[-1]}"
        try:
            fs.get(url.removeprefix("s3://"), target)
        except Exception as error:  # botocore and s3fs raise many types
            raise DataError(f"cannot read {label}: {type(error).__name__}: {one_line(error)}") from error
        local.append(target)
    return local


def _union_columns(files: list[str], fmt: str, sep: str) -> list[str]:
    """Every column of any of the (local) files, in order of first appearance."""
    import pandas as pd
    import pyarrow.json

    columns: dict[str, None] = {}
    for path in files:
        if fmt == "csv":
            names = list(pd.read_csv(path, nrows=0, sep=sep, compression="infer").columns)
        else:
            names = pyarrow.json.read_json(path).column_names
        columns.update(dict.fromkeys(map(str, names)))
    return list(columns)


def _read_with_datasets(
    files: list[str], fmt: str, storage_options: dict[str, Any] | None, label: str, **options: Any
) -> pd.DataFrame:
    """Read files with the `datasets` library into one pandas frame (a cache in a temp dir)."""
    _offline()
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    if fmt == "csv" and all(name.lower().removesuffix(".gz").endswith(".tsv") for name in files):
        options.setdefault("sep", "\t")
    with tempfile.TemporaryDirectory(prefix="recops-data-") as cache_dir:
        if storage_options is not None:
            files = _fetch(files, storage_options, f"{cache_dir}/files", label)
        try:
            try:
                loaded = datasets.load_dataset(
                    BUILDERS[fmt], data_files=files, split="train", cache_dir=f"{cache_dir}/cache", **options
                )
            except Exception:
                if len(files) < 2 or fmt == "parquet":
                    raise
                # Partitions whose columns differ (an hour of the event log with only feedback has
                # no title column): read every column of every file as text; cleaning types them.
                columns = _union_columns(files, fmt, options.get("sep", ","))
                features = datasets.Features({name: datasets.Value("string") for name in columns})
                loaded = datasets.load_dataset(
                    BUILDERS[fmt],
                    data_files=files,
                    split="train",
                    cache_dir=f"{cache_dir}/cache-text",
                    features=features,
                    **options,
                )
            frame = loaded.to_pandas()
        except Exception as error:  # pyarrow, datasets and fsspec raise many types for unreadable data
            cause = error.__cause__ or error.__context__ or error
            if isinstance(error, datasets.exceptions.DatasetGenerationError) and cause is not error:
                error = cause  # type: ignore[assignment]
            raise DataError(f"cannot read {label} as {fmt}: {type(error).__name__}: {one_line(error)}") from error
    if isinstance(frame, list | tuple):  # to_pandas(batched) never happens here, but keep mypy honest
        raise DataError(f"cannot read {label}")
    return frame


def _read_atomic(path: str) -> pd.DataFrame:
    """A RecBole atomic file: tab-separated, headers typed as `name:type`."""
    frame = _read_with_datasets([path], "csv", None, path, sep="\t", quoting=3, keep_default_na=False).astype(str)
    frame.columns = [str(name).split(":", 1)[0] for name in frame.columns]
    return frame


def _movielens_frame() -> pd.DataFrame:
    """ml-100k as shop events: users rate movies; no query, so groups are users."""
    import pandas as pd

    root = str(uris.builtin_path("movielens-100k"))
    inter = _read_atomic(f"{root}/ml-100k.inter")
    items = _read_atomic(f"{root}/ml-100k.item")
    users = _read_atomic(f"{root}/ml-100k.user")
    rating = pd.to_numeric(inter["rating"], errors="coerce")
    genres = items["class"].str.split().str.join(", ")
    items = pd.DataFrame(
        {
            "product_id": items["item_id"],
            "movie_title": items["movie_title"],
            "genre": genres,
            "year": items["release_year"],
            # The product text: the title with its year, then the genres.
            "title": items["movie_title"] + " (" + items["release_year"] + ")"
            + contracts.PRODUCT_TEXT_SEPARATOR + genres,
        }
    )
    users = pd.DataFrame(
        {
            "user_id": users["user_id"],
            "user_context": "age " + users["age"] + ", " + users["gender"] + ", " + users["occupation"],
        }
    )
    frame = pd.DataFrame(
        {
            "user_id": inter["user_id"],
            "product_id": inter["item_id"],
            "rating": rating,
            "event": rating.round().map(MOVIELENS_EVENTS),
            "timestamp": pd.to_numeric(inter["timestamp"], errors="coerce"),
        }
    )
    frame = frame.merge(items, on="product_id", how="left").merge(users, on="user_id", how="left")
    return frame


def _read_raw(dataset: DatasetSpec) -> pd.DataFrame:
    if dataset.uri is None:
        raise DataError("dataset.uri is not set")
    uri = str(dataset.uri)
    try:
        parsed = uris.parse(uri)
    except uris.UriError as error:
        raise DataError(f"dataset.uri: {error}") from error
    if parsed.scheme == "builtin":
        if uri != uris.BUILTIN_MOVIELENS:
            raise DataError(f"unknown builtin data set {uri}: the only one is {uris.BUILTIN_MOVIELENS}")
        try:
            return _movielens_frame()
        except uris.UriError as error:
            raise DataError(f"{uri}: {error} (pip install --no-deps recbole)") from error
    files, storage_options = _list_files(uri)
    if dataset.since is not None:
        since = since_epoch(dataset.since)
        kept = [name for name in files if not _partition_before(name, since)]
        if not kept:
            raise DataError(f"no data at {uri} at or after dataset.since {dataset.since}")
        files = kept
    fmt, files = _infer_format(uri, files, dataset.format)
    return _read_with_datasets(files, fmt, storage_options, uri)


_PARTITION_DAY = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")
_PARTITION_HOUR = re.compile(r"^hour=(\d{1,2})$")


def since_epoch(since: str) -> float:
    """dataset.since (RFC 3339; a zone-less time is UTC) as epoch seconds."""
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(since.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as error:
        raise DataError(f"dataset.since {since!r} is not an RFC 3339 time") from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _partition_before(path: str, since: float) -> bool:
    """True when `path` lies in a dt=/hour= partition that ends before `since` (epoch seconds)."""
    from datetime import UTC, datetime, timedelta

    day: str | None = None
    hour: int | None = None
    for part in path.split("/"):
        if match := _PARTITION_DAY.match(part):
            day = match.group(1)
        elif (match := _PARTITION_HOUR.match(part)) and day is not None:
            hour = int(match.group(1))
    if day is None:
        return False
    try:
        start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return False
    end = start + (timedelta(hours=hour + 1) if hour is not None else timedelta(days=1))
    return end.timestamp() <= since


def _is_event_log(frame: pd.DataFrame, dataset: DatasetSpec) -> bool:
    """Rows that are events of ranked responses (a request_id): feedback joins its impression."""
    fields = dataset.fields
    return (
        fields.label is None
        and fields.event is not None
        and REQUEST_ID in frame.columns
        and fields.event in frame.columns
        and fields.product_id in frame.columns
    )


def _duplicated(frame: pd.DataFrame) -> pd.Series:
    """Rows equal to an earlier row in every column (compared by a 64-bit hash of the row)."""
    import pandas as pd

    return pd.util.hash_pandas_object(frame, index=False).duplicated(keep="first")


def _merge_feedback(frame: pd.DataFrame, dataset: DatasetSpec) -> pd.DataFrame:
    """Serving event-log rows -> one row per (request_id, product_id): the highest-graded event,
    with the impression's text fields and time, so the default field mapping applies."""
    import pandas as pd

    fields = dataset.fields
    if (
        EVENT_LOG_TIMESTAMP in frame.columns
        and fields.timestamp
        and fields.timestamp not in frame.columns
    ):
        frame = frame.rename(columns={EVENT_LOG_TIMESTAMP: fields.timestamp})
    event, product = fields.event, fields.product_id
    if not _is_event_log(frame, dataset) or event is None:
        return frame
    has_request = frame[REQUEST_ID].notna()
    loose, logged = frame[~has_request], frame[has_request]
    if logged.empty:
        return frame
    keys = [REQUEST_ID, product]
    grades = logged[event].map(dataset.event_grades).fillna(-1.0)
    best = (
        logged.assign(_grade=grades, _order=range(len(logged)))
        .sort_values(["_grade", "_order"], ascending=[False, True], kind="stable")
        .drop_duplicates(keys)[[*keys, event]]
    )
    is_impression = logged[event] == IMPRESSION
    impressions = logged[is_impression].drop_duplicates(keys).drop(columns=[event])
    # Feedback without an impression keeps its own (text-less) fields; cleaning drops it.
    orphans = logged[~is_impression].drop_duplicates(keys).drop(columns=[event])
    details = pd.concat([impressions, orphans], ignore_index=True).drop_duplicates(keys)
    merged = best.merge(details, on=keys, how="left")
    merged = merged[[name for name in frame.columns if name in merged.columns]]
    return pd.concat([merged, loose], ignore_index=True) if len(loose) else merged.reset_index(drop=True)


def load_frame(dataset: DatasetSpec) -> pd.DataFrame:
    """The raw rows a DatasetSpec names, read with the `datasets` library. Serving event logs
    (records with a request_id) come back as one row per shown item, its best event kept."""
    return _merge_feedback(_read_raw(dataset), dataset)


# --- cleaning -----------------------------------------------------------------------------
def _text(series: pd.Series) -> pd.Series:
    """Strings with whitespace collapsed; missing stays missing."""
    import numpy as np
    import pandas as pd

    # Clean each distinct value once: shop logs repeat the same titles and queries a lot.
    codes, distinct = pd.factorize(series, use_na_sentinel=True)
    cleaned = pd.Series(distinct, dtype=object).astype("string")
    cleaned = cleaned.str.replace(_WHITESPACE, " ", regex=True).str.strip()
    values = cleaned.to_numpy(dtype=object, na_value=pd.NA)
    out = np.where(codes >= 0, values[np.maximum(codes, 0)] if len(values) else pd.NA, pd.NA)
    return pd.Series(out, index=series.index, dtype="string")


def _ids(series: pd.Series) -> pd.Series:
    """IDs as strings; integral floats (CSV columns with gaps) lose their '.0'."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_float_dtype(series):
        values = series.to_numpy(dtype=float, na_value=np.nan)
        integral = np.isfinite(values) & (np.floor(values) == values)
        text = series.astype("string")
        as_int = pd.Series(np.where(integral, values, 0).astype(np.int64), index=series.index).astype("string")
        series = text.where(~integral, as_int)
    out = _text(series)
    return out.where(out != "", pd.NA)


def _epoch_seconds(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(epoch seconds or NaN, mask of values that were given but cannot be a time)."""
    import numpy as np
    import pandas as pd

    given = series.notna()
    if pd.api.types.is_datetime64_any_dtype(series):
        stamps = pd.to_datetime(series, utc=True)
        seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    elif pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        seconds = pd.to_numeric(series, errors="coerce").astype(float)
        # Milliseconds since the epoch (JavaScript, Kafka) are read as such.
        seconds = seconds.where(seconds.abs() < 1e11, seconds / 1000.0)
    else:
        # Text or mixed objects: numbers are epoch (milli)seconds, the rest dates in any ISO-like shape.
        numeric = pd.to_numeric(series, errors="coerce")
        from_numbers, _ = _epoch_seconds(numeric.astype(float))
        text = series.astype("string").where(numeric.isna(), pd.NA)
        stamps = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")  # the fast, usual case
        retry = stamps.isna() & text.notna()
        if retry.any():
            stamps = stamps.where(~retry, pd.to_datetime(text[retry], utc=True, errors="coerce", format="mixed"))
        seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().fillna(from_numbers)
    seconds = seconds.astype(float)
    impossible = given & (~np.isfinite(seconds.to_numpy(dtype=float, na_value=np.nan)) | (seconds < 0))
    return seconds.where(~impossible, np.nan), impossible


class _Cleaner:
    """Applies steps to a frame, counting the rows each one drops."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.steps: list[tuple[str, int]] = []

    def drop(self, step: str, mask: pd.Series | np.ndarray) -> None:
        import numpy as np

        mask = np.asarray(mask, dtype=bool)
        self.steps.append((step, int(mask.sum())))
        if mask.any():
            self.frame = self.frame[~mask]


def _column(frame: pd.DataFrame, name: str | None) -> str | None:
    """A mapped optional role's column, when the data has it."""
    return name if name and name in frame.columns else None


def _require(frame: pd.DataFrame, name: str, role: str) -> None:
    if name not in frame.columns:
        shown = ", ".join(map(str, list(frame.columns)[:12]))
        more = ", ..." if len(frame.columns) > 12 else ""
        raise DataError(f"column {name!r} ({role}) is not in the data; columns are: {shown}{more}")


@dataclass(frozen=True)
class _Columns:
    """The raw data's column for each role (None: not in the data) and what the task needs of them."""

    label: str | None
    event: str | None
    query: str | None
    user: str | None
    context: str | None
    time: str | None
    needs_target: bool


def _columns(raw: pd.DataFrame, dataset: DatasetSpec, task: str) -> _Columns:
    """Map roles to columns, refusing data that lacks what the spec names or the task needs (DataError)."""
    fields = dataset.fields
    _require(raw, fields.product_id, "fields.productId")
    for name in fields.product_text:
        _require(raw, name, "fields.productText")
    # A role mapped to a column other than its default name must exist (a misspelt name would otherwise train without
    # it, e.g. without queries); a role left at its default may be absent. (Not model_fields_set: the apiserver fills
    # in the CRD's defaults, so in a cluster every field looks set.)
    for attr, role in (("query", "fields.query"), ("user", "fields.user"), ("user_context", "fields.userContext"),
                       ("timestamp", "fields.timestamp")):
        name = getattr(fields, attr)
        if name is not None and name != type(fields).model_fields[attr].default:
            _require(raw, name, role)
    needs_target = task != "domain-pretrain"
    if fields.label is not None:
        _require(raw, fields.label, "fields.label")
    columns = _Columns(label=fields.label, event=_column(raw, fields.event) if fields.label is None else None,
                       query=_column(raw, fields.query), user=_column(raw, fields.user),
                       context=_column(raw, fields.user_context), time=_column(raw, fields.timestamp),
                       needs_target=needs_target)
    if needs_target and columns.label is None and columns.event is None:
        raise DataError(
            f"no label: column {fields.event!r} (fields.event) is not in the data and fields.label is not set"
        )
    if needs_target and not (columns.query or columns.user or columns.context):
        raise DataError(
            "the data has no query, user or user context column (fields.query "
            f"{fields.query!r}, fields.user {fields.user!r}, fields.userContext {fields.user_context!r}): a {task} "
            "model ranks products for a query or a user; map the column that holds one"
        )
    if dataset.split.by == "time" and columns.time is None:
        raise DataError(f"split.by is time but column {fields.timestamp!r} (fields.timestamp) is not in the data")
    return columns


def _role_frame(raw: pd.DataFrame, dataset: DatasetSpec, columns: _Columns) -> pd.DataFrame:
    """The raw data as roles: product id and text, query, user, context, exploration flag and the raw event, label
    and time columns (`_event`, `_label_raw`, `_time_raw`) that cleaning reads."""
    import pandas as pd

    fields = dataset.fields
    # Text fields joined in order; empty ones are skipped, not joined as blanks.
    joined = pd.Series("", index=raw.index, dtype="string")
    for name in fields.product_text:
        part = _text(raw[name]).fillna("")
        prefix = joined.where(joined == "", joined + contracts.PRODUCT_TEXT_SEPARATOR)
        joined = joined.where(part == "", prefix + part)
    absent = pd.Series(pd.NA, index=raw.index, dtype="string")
    frame = pd.DataFrame(
        {
            "product_id": _ids(raw[fields.product_id]),
            "product_text": joined,
            "query": _text(raw[columns.query]) if columns.query else absent,
            "_user": _ids(raw[columns.user]) if columns.user else absent,
            "_context": _text(raw[columns.context]) if columns.context else absent,
        },
        index=raw.index,
    )
    frame["query"] = frame["query"].where(frame["query"] != "", pd.NA)
    explored = raw[EXPLORED] if EXPLORED in raw.columns else pd.Series(False, index=raw.index)
    frame["explored"] = explored.eq(True).astype(bool)
    propensity = raw[PROPENSITY] if PROPENSITY in raw.columns else pd.Series(float("nan"), index=raw.index)
    frame[PROPENSITY] = pd.to_numeric(propensity, errors="coerce").astype(float)
    if columns.event:
        frame["_event"] = _text(raw[columns.event])
    if columns.label:
        frame["_label_raw"] = raw[columns.label]
    if columns.time:
        frame["_time_raw"] = raw[columns.time]
    return frame


def _drop_invalid(cleaner: _Cleaner, dataset: DatasetSpec, columns: _Columns) -> pd.DataFrame:
    """Cleaning steps 1-4 (each counted in the report), then each row's grade and timestamp."""
    import numpy as np
    import pandas as pd

    cleaning = dataset.cleaning
    # 1. Rows missing a required field.
    f = cleaner.frame
    missing = f["product_id"].isna() | (f["product_text"] == "")
    if columns.event:
        missing |= f["_event"].isna() | (f["_event"] == "")
    if columns.label:
        missing |= f["_label_raw"].isna()
    if dataset.split.by == "time":
        missing |= f["_time_raw"].isna()
    cleaner.drop("missing_fields", missing)

    # 2. Product text that is too short or absurdly long, and absurdly long queries.
    f = cleaner.frame
    lengths = f["product_text"].str.len()
    too_long_context = f["query"].str.len().fillna(0) > cleaning.max_text_length
    too_long_context |= f["_context"].str.len().fillna(0) > cleaning.max_text_length
    cleaner.drop(
        "outliers_text_length",
        (lengths < max(cleaning.min_text_length, 1)) | (lengths > cleaning.max_text_length) | too_long_context,
    )

    # 3. Events the grade table does not know.
    grades_known = {str(name): float(grade) for name, grade in dataset.event_grades.items()}
    if columns.event and cleaning.drop_unknown_events:
        cleaner.drop("unknown_events", ~cleaner.frame["_event"].isin(list(grades_known)))

    # 4. Impossible values: labels that are not finite non-negative numbers, times that are no times.
    f = cleaner.frame
    impossible = pd.Series(False, index=f.index)
    if columns.label:
        label_values = pd.to_numeric(f["_label_raw"], errors="coerce").astype(float)
        impossible |= ~np.isfinite(label_values.to_numpy(dtype=float, na_value=np.nan)) | (label_values < 0)
    if columns.time:
        _, bad_time = _epoch_seconds(f["_time_raw"])
        impossible |= bad_time
    cleaner.drop("impossible_values", impossible)

    f = cleaner.frame.copy()
    if columns.label:
        f["grade"] = pd.to_numeric(f["_label_raw"], errors="coerce").astype(float)
    elif columns.event:
        f["grade"] = f["_event"].map(grades_known).fillna(0.0).astype(float)
    else:
        f["grade"] = 0.0
    f["timestamp"] = _epoch_seconds(f["_time_raw"])[0].astype(float) if columns.time else np.nan
    return f


def _limit_rows(cleaner: _Cleaner, f: pd.DataFrame, dataset: DatasetSpec, timed: bool) -> pd.DataFrame | None:
    """Step 6, at most maxRows rows: the newest when the data is timed, else a random sample seeded by split.seed
    (the first rows of an export sorted by product or query would be a biased sample). Gives each kept row its
    user's earlier events (`_ratings`), read before the cut so that they reach into the older rows, leaves the kept
    rows in `cleaner.frame` (the cut counted as a step) and returns
    the older rows the cut leaves out of timed data (every one is before every kept row), or None."""
    import numpy as np
    import pandas as pd

    over = np.zeros(len(f), dtype=bool)
    step = "max_rows"
    if dataset.max_rows is not None and len(f) > dataset.max_rows:
        if timed:
            order = f["timestamp"].rank(method="first", ascending=False, na_option="bottom")
            over = (order > dataset.max_rows).to_numpy()
        else:
            step = "max_rows_random_sample"
            over = np.ones(len(f), dtype=bool)
            over[np.random.default_rng(dataset.split.seed).choice(len(f), dataset.max_rows, replace=False)] = False
    cleaner.frame = f.assign(_ratings=_with_ratings(f, ~over) if timed else pd.Series([()] * len(f), index=f.index,
                                                                                       dtype=object))
    earlier = cleaner.frame.loc[over, ["_user", "product_id", "grade"]].copy() if timed and over.any() else None
    if over.any():
        cleaner.drop(step, over)
    return earlier


def _pseudonymised(users: pd.Series, dataset: DatasetSpec, salt: str) -> pd.Series:
    """The users' pseudonyms (or their IDs when pseudonymisation is off); a missing user stays missing."""
    if not dataset.pseudonymisation.enabled:
        return users
    return users.map({user: contracts.pseudonymise(str(user), salt) for user in users.dropna().unique()})


def _clean(
    raw: pd.DataFrame, dataset: DatasetSpec, task: str, rows_read: int, salt: str
) -> tuple[pd.DataFrame, list[tuple[str, int]], int, pd.DataFrame | None]:
    """Map columns to roles and clean. Returns the frame (with the split keys in `_key_*`
    columns that hold clear IDs: callers drop them), the steps, the pseudonymised users, and the
    earlier rows that maxRows left out of timed data (PreparedData.earlier)."""
    import pandas as pd

    columns = _columns(raw, dataset, task)
    cleaner = _Cleaner(_role_frame(raw, dataset, columns))
    f = _drop_invalid(cleaner, dataset, columns)

    # 5. Only what happened at or after dataset.since (rows without a time cannot prove they did).
    if dataset.since is not None:
        if not columns.time:
            raise DataError(f"dataset.since is set but column {dataset.fields.timestamp!r} (fields.timestamp) is not "
                            "in the data")
        cleaner.frame = f
        cleaner.drop("before_since", ~(f["timestamp"] >= since_epoch(dataset.since)).to_numpy())
        f = cleaner.frame

    if dataset.user_history:
        if not columns.time or f["_user"].isna().all():
            raise DataError("dataset.userHistory needs a user and a timestamp column (fields.user, fields.timestamp)")
        f = f.assign(_context=_with_history(f, dataset.user_history))

    earlier = _limit_rows(cleaner, f, dataset, timed=columns.time is not None)
    f = cleaner.frame
    if f.empty:
        raise DataError(f"no rows left after cleaning ({rows_read} read; dropped: {_summary(cleaner.steps)})")

    # Labels of the task.
    f["label"] = _task_label(f["grade"], task)
    if columns.needs_target and f["label"].nunique() < 2:
        value = f["label"].iloc[0]
        raise DataError(
            f"the {task} label has a single class ({value:g} in all {len(f)} rows): nothing to learn"
        )

    # Pseudonymise: the clear ID stays only in `_key_user` (memory) for the split, then is dropped.
    users = f["_user"]
    f["user"] = _pseudonymised(users, dataset, salt).astype("string")
    pseudonymised = int(users.dropna().nunique()) if dataset.pseudonymisation.enabled else 0
    if earlier is not None:
        earlier_users = _pseudonymised(earlier["_user"], dataset, salt)
        earlier = pd.DataFrame({"user": earlier_users.astype(object).where(earlier_users.notna(), None),
                                "product_id": earlier["product_id"].astype(str), "grade": earlier["grade"].astype(float),
                                "label": _task_label(earlier["grade"], task)}).reset_index(drop=True)
    # contracts.context_text, vectorised: the query, else "user: <context>", else "".
    with_context = f["_context"].notna() & (f["_context"] != "")
    user_context = ("user: " + f["_context"]).where(with_context, "")
    f["context"] = f["query"].where(f["query"].notna(), user_context).astype(str)
    f["group"] = f["query"].fillna(f["user"]).fillna(f["context"]).astype(str)
    # Split keys, independent of the salt so that the split is the same with any salt.
    f["_key_group"] = ("q:" + f["query"]).fillna("u:" + users).fillna("c:" + f["context"]).astype(str)
    f["_key_user"] = ("u:" + users).fillna(f["_key_group"]).astype(str)
    f["ratings"] = f["_ratings"]
    return f, cleaner.steps, pseudonymised, earlier


def _task_label(grade: pd.Series, task: str) -> pd.Series:
    """click-through and embedding learn whether an event was positive (grade >= 1); relevance the grade."""
    if task in ("click-through", "embedding"):
        return (grade >= 1.0).astype(float)
    return grade.astype(float)


def _with_ratings(f: pd.DataFrame, wanted: np.ndarray) -> pd.Series:
    """For each wanted row, its user's last MAX_USER_RATINGS events strictly before the row's time, oldest first,
    as (product id, grade) pairs (rows at the same time never see each other; the fusion's user offset reads them,
    as the server reads a request's `user.ratings`). Other rows, and rows without a user or time: ()."""
    import numpy as np
    import pandas as pd

    out = np.empty(len(f), dtype=object)
    out[:] = [()] * len(f)
    timed = f.assign(_row=np.arange(len(f)), _wanted=wanted).dropna(subset=["_user", "timestamp"])
    timed = timed.sort_values(["_user", "timestamp"], kind="stable")
    for _, rows in timed.groupby("_user", sort=False):
        if not rows["_wanted"].any():
            continue
        times = rows["timestamp"].to_numpy(dtype=float)
        events = list(zip(rows["product_id"].astype(str), rows["grade"].astype(float), strict=True))
        before = np.searchsorted(times, times, side="left")  # events strictly earlier than each row
        for row, end, keep in zip(rows["_row"].to_numpy(), before, rows["_wanted"].to_numpy(), strict=True):
            if keep:
                out[row] = tuple(events[max(0, end - contracts.MAX_USER_RATINGS):end])
    return pd.Series(out, index=f.index, dtype=object)


def _with_history(f: pd.DataFrame, items: int) -> pd.Series:
    """Each row's user context with the product texts of the user's last `items` liked items strictly before the
    row's time (rows at the same time never see each other). Liked: a grade of at least max(1, median grade)."""
    import pandas as pd

    liked = (f["grade"] >= max(1.0, float(f["grade"].median()))).to_numpy()
    out = f["_context"].astype(object).to_numpy().copy()
    order = f.assign(_liked=liked, _row=range(len(f))).sort_values(["_user", "timestamp"], kind="stable")
    for _, rows in order.groupby("_user", sort=False, dropna=True):
        recent: list[str] = []
        for _, same_time in rows.groupby("timestamp", sort=True):
            for row in same_time["_row"]:
                context = out[row]
                out[row] = contracts.with_history(None if pd.isna(context) else str(context), recent[::-1])
            recent = (recent + same_time.loc[same_time["_liked"], "product_text"].astype(str).tolist())[-items:]
    return pd.Series(out, index=f.index, dtype="string")


def _summary(steps: list[tuple[str, int]]) -> str:
    return ", ".join(f"{name} {dropped}" for name, dropped in steps if dropped) or "nothing"


# --- splitting ----------------------------------------------------------------------------
def _hash_order(keys: pd.Series, seed: int) -> np.ndarray:
    """A seeded order of distinct keys: the same keys and seed give the same order whatever the row order."""
    import numpy as np

    salt = f"{seed}\x00".encode()
    return np.array([hashlib.sha256(salt + key.encode()).digest()[:8] for key in keys], dtype=object)


def _split_groups(keys: pd.Series, fractions: tuple[float, float], seed: int, what: str) -> np.ndarray:
    """Assign whole groups to splits (0 train, 1 validation, 2 test), about the wanted share of rows each."""
    import numpy as np
    import pandas as pd

    val_fraction, test_fraction = fractions
    sizes = keys.value_counts(sort=False)
    if len(sizes) < 2:
        raise DataError(f"split by {what} needs at least 2 distinct {what} values; the data has {len(sizes)}")
    order_keys = _hash_order(pd.Series(sizes.index.astype(str)), seed)
    ordered = sizes.iloc[np.argsort(order_keys, kind="stable")]
    wanted_val = val_fraction > 0 and len(sizes) >= 3
    total = int(ordered.sum())
    cumulative = ordered.cumsum().to_numpy()
    # Test takes groups until it holds its share (at least one group), then validation.
    n_test = max(1, int(np.searchsorted(cumulative, test_fraction * total, side="left")) + 1)
    n_test = min(n_test, len(sizes) - (2 if wanted_val else 1))
    n_val = 0
    if wanted_val:
        reached = cumulative[n_test - 1]
        n_val = max(1, int(np.searchsorted(cumulative, reached + val_fraction * total, side="left")) + 1 - n_test)
        n_val = min(n_val, len(sizes) - n_test - 1)
    assignment = np.zeros(len(ordered), dtype=np.int8)
    assignment[:n_test] = 2
    assignment[n_test : n_test + n_val] = 1
    by_key = pd.Series(assignment, index=ordered.index)
    result: np.ndarray = keys.map(by_key).to_numpy(dtype=np.int8)
    return result


def _split_time(frame: pd.DataFrame, fractions: tuple[float, float]) -> np.ndarray:
    """The latest rows are test, the ones before validation (ties broken by the row's group key)."""
    import numpy as np

    val_fraction, test_fraction = fractions
    n = len(frame)
    if n < 2:
        raise DataError(f"split by time needs at least 2 rows; the data has {n}")
    order = np.lexsort((frame["_key_group"].to_numpy(dtype=str), frame["timestamp"].to_numpy(dtype=float)))
    n_test = min(max(1, round(test_fraction * n)), n - 1)
    n_val = min(round(val_fraction * n), n - n_test - 1)
    assignment = np.zeros(n, dtype=np.int8)
    assignment[order[n - n_test :]] = 2
    if n_val > 0:
        assignment[order[n - n_test - n_val : n - n_test]] = 1
    return assignment


def _split_random(n: int, fractions: tuple[float, float], seed: int) -> np.ndarray:
    import numpy as np

    val_fraction, test_fraction = fractions
    if n < 2:
        raise DataError(f"a random split needs at least 2 rows; the data has {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(max(1, round(test_fraction * n)), n - 1)
    n_val = min(round(val_fraction * n), n - n_test - 1)
    assignment = np.zeros(n, dtype=np.int8)
    assignment[order[:n_test]] = 2
    assignment[order[n_test : n_test + n_val]] = 1
    return assignment


def _fingerprint(frames: dict[str, pd.DataFrame], task: str) -> str:
    """sha256 of the cleaned rows of each split, as a multiset (independent of the row order).
    Users enter only as the shape of who-did-what, never by pseudonym, so the fingerprint does
    not depend on the salt."""
    import numpy as np
    import pandas as pd

    digest = hashlib.sha256(f"recops-data-v1\x00{task}\x00".encode())
    content = ["context", "product_id", "product_text", "grade", "label", "timestamp"]
    for name in SPLITS:
        frame = frames[name]
        rows = pd.util.hash_pandas_object(frame[content], index=False).to_numpy()
        # A user is named by the smallest hash of its rows: the same for any salt and row order.
        user_key = pd.Series(rows).groupby(frame["user"].to_numpy(), dropna=False).transform("min")
        user_key = user_key.where(frame["user"].notna().to_numpy(), 0)
        combined = pd.util.hash_pandas_object(
            pd.DataFrame({"row": rows, "user": user_key.to_numpy(dtype=np.uint64)}), index=False
        ).to_numpy()
        digest.update(f"\x00{name}\x00{len(frame)}\x00".encode())
        digest.update(np.sort(combined).tobytes())
    return digest.hexdigest()


def prepare(dataset: DatasetSpec, task: str, *, salt: str | None = None, seed: int | None = None) -> PreparedData:
    """Load, clean, pseudonymise and split the data of a FineTuneJob.

    salt: the pseudonymisation salt; default RECOPS_PSEUDONYM_SALT, else a random one (pseudonyms
    then differ per run, the split and the fingerprint do not). seed: default dataset.split.seed.
    """
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}")
    return prepare_frame(_read_raw(dataset), dataset, task, salt=salt, seed=seed)


def prepare_frame(
    raw: pd.DataFrame, dataset: DatasetSpec, task: str, *, salt: str | None = None, seed: int | None = None
) -> PreparedData:
    """`prepare` for rows already in memory (as `datasets` would read them; dataset.uri unused)."""
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}")
    if salt is None:
        salt = os.environ.get(contracts.ENV_PSEUDONYM_SALT) or secrets.token_hex(16)
    seed = dataset.split.seed if seed is None else seed
    rows_read = len(raw)
    steps: list[tuple[str, int]] = []
    if dataset.cleaning.drop_duplicates:
        # Rows equal in every column: retried log writes, double exports. First, so that event-log
        # records written twice are not counted as merged feedback.
        twice = _duplicated(raw)
        steps.append(("duplicates", int(twice.sum())))
        raw = raw[~twice.to_numpy()]
    merged = _merge_feedback(raw, dataset)
    if _is_event_log(raw, dataset):
        steps.append(("feedback_merged", len(raw) - len(merged)))
    frame, cleaning_steps, pseudonymised, earlier = _clean(merged, dataset, task, rows_read, salt)
    steps += cleaning_steps

    fractions = (dataset.split.validation, dataset.split.test)
    split_by: str = dataset.split.by
    if split_by == "time":
        assignment = _split_time(frame, fractions)
    elif split_by == "random":
        assignment = _split_random(len(frame), fractions, seed)
    elif split_by == "user":
        has_users = frame["user"].notna().any()
        key = "_key_user" if has_users else "_key_group"
        assignment = _split_groups(frame[key], fractions, seed, "user" if has_users else "group")
        split_by = "user" if has_users else "group"
    else:
        has_queries = frame["query"].notna().any()
        assignment = _split_groups(frame["_key_group"], fractions, seed, "query" if has_queries else "group")
        split_by = "query" if has_queries else "group (user: the data has no query)"

    output = frame[list(COLUMNS)].copy()
    output["query"] = output["query"].astype(object).where(output["query"].notna(), None)
    output["user"] = output["user"].astype(object).where(output["user"].notna(), None)
    for name in ("group", "context", "product_id", "product_text"):
        output[name] = output[name].astype(str)
    frames = {
        name: output[assignment == code].reset_index(drop=True) for code, name in enumerate(SPLITS)
    }
    report = CleaningReport(
        rows_read=rows_read,
        steps=steps,
        rows_kept=len(output),
        pseudonymised_users=pseudonymised,
        split_by=split_by,
        split_rows={name: len(frames[name]) for name in SPLITS},
        split_groups={name: int(frames[name]["group"].nunique()) for name in SPLITS},
    )
    if task != "domain-pretrain" and frames["train"]["label"].nunique() < 2:
        raise DataError(f"the train split's {task} label has a single class: nothing to learn")
    max_grade = 1.0 if task in ("click-through", "embedding") else float(max(output["grade"].max(), 1.0))
    if task not in ("click-through", "embedding") and dataset.fields.label is None and dataset.event_grades:
        max_grade = float(max(max(dataset.event_grades.values()), 1))
    return PreparedData(
        train=frames["train"],
        validation=frames["validation"],
        test=frames["test"],
        report=report,
        fingerprint=_fingerprint(frames, task),
        max_grade=max_grade,
        logged=_served_log(raw, dataset),
        earlier=earlier,
    )


def _served_log(raw: pd.DataFrame, dataset: DatasetSpec) -> bool:
    """Rows that `recops serve` logged (contracts.EVENT_LOG_FIELDS: each names the model that ranked it), whose
    clicks favour that model; other event data (a shop's own logs, `recops data synth`) was ranked by something else."""
    return _is_event_log(raw, dataset) and bool({EXPLORED, SERVED_BY} & set(raw.columns))
