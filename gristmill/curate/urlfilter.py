"""URL blocklists: datatrove's URLFilter with the lists bundled in its wheel (no download), plus your own.

datatrove ships its blocklists inside the wheel (`datatrove/assets/`): the UT1 blacklists FineWeb uses
(`url_filterblacklistsv0_3_0.tar.gz`: ~4.6M domains and ~20k URLs, mostly adult sites) and three word
lists matched against the words of a URL (banned words, "soft" banned words counted against a
threshold, banned sub-words matched anywhere). URLFilter's own `download_data` extracts the tarball into
the Hugging Face cache and loads the domains as a Python set: ~1.6 s and ~500 MB in every worker process.
`BlocklistURLFilter` keeps datatrove's `filter()` rules and its lists, but holds the domains as a sorted
array of 64-bit hashes (36 MB), built once per machine from the tarball into the user cache and memory-
mapped by every worker (the page cache shares it). A false match needs a 64-bit collision with one of
4.6M hashes: ~2.5e-13 per lookup. Public suffixes come from tldextract's bundled snapshot, never fetched.

Your own lists (`curate.url_filter.domains` / `domain_files`, `urls` / `url_files`): a domain entry
blocks that host and every host under it ("example.com": example.com, www.example.com, a.b.example.com;
"blog.example.com": that host and its subdomains only), matched on the URL's host itself, so hosts
under a suffix that is not in the public suffix list (.test, .internal) are matched too; a URL entry
blocks that URL (scheme and a trailing '/' ignored).
"""
from __future__ import annotations

import hashlib
import os
import tarfile
import warnings
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

import numpy as np

from gristmill.curate import CurateError
from gristmill.curate.config import UrlFilterConfig

from datatrove.pipeline.filters.url_filter import URLFilter, get_list
from datatrove.utils._import_utils import ASSETS_PATH

TARBALL = "url_filterblacklistsv0_3_0.tar.gz"  # datatrove 0.3 - 0.10 ship this one
REASON = "url_blocklist"


def tarball_path() -> Path:
    return Path(ASSETS_PATH) / TARBALL


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gristmill"


def domain_hash(domain: str) -> int:
    """Stable 64-bit hash of a lowercased domain (Python's own hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(domain.strip().lower().encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "little")


def domain_index(sha256: str) -> Path:
    """The sorted uint64 hashes of the bundled domain list, built on first use (~5 s) and cached per
    tarball content (`sha256` of the tarball), so a datatrove upgrade builds a new one."""
    path = cache_dir() / f"url-blocklist-domains-{sha256[:16]}.npy"
    if path.is_file():
        return path
    with tarfile.open(tarball_path(), "r:gz") as tar:
        member = tar.extractfile("domains")
        if member is None:
            raise CurateError(f"{tarball_path()}: no 'domains' list inside; reinstall datatrove")
        lines = member.read().split(b"\n")
    hashes = np.fromiter((int.from_bytes(hashlib.blake2b(s.lower(), digest_size=8).digest(), "little")
                          for line in lines if (s := line.strip()) and not s.startswith(b"#")), dtype=np.uint64)
    hashes.sort()
    hashes = hashes[np.concatenate(([True], hashes[1:] != hashes[:-1]))] if hashes.size else hashes
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # several workers may build it at once
    with open(tmp, "wb") as f:
        np.save(f, hashes)
    os.replace(tmp, path)
    return path


class DomainSet:
    """`domain in s`: the user's domains (`extra`, a set) or the bundled ones (sorted hashes, memory-mapped)."""

    def __init__(self, hashes: np.ndarray, extra: Iterable[str] = ()):
        self.hashes = hashes
        self.extra = {d.strip().lower() for d in extra if d.strip()}

    def __contains__(self, domain: object) -> bool:
        if not isinstance(domain, str) or not domain:
            return False  # tldextract gives "" for IP addresses and bare hosts
        d = domain.lower()
        if d in self.extra:
            return True
        if not self.hashes.size:
            return False
        h = np.uint64(domain_hash(d))
        i = int(np.searchsorted(self.hashes, h))
        return i < self.hashes.size and self.hashes[i] == h

    def __len__(self) -> int:
        return int(self.hashes.size) + len(self.extra)


def url_key(url: str) -> str:
    """A URL as the lists hold it: no scheme, no trailing '/' (datatrove's bundled URL list has no scheme,
    so its own `url in list` test never matches a crawled http(s):// URL)."""
    u = url.strip()
    if "://" in u[:12]:
        u = u.split("://", 1)[1]
    return u.rstrip("/")


def read_list(path: str, key: str) -> list[str]:
    """One entry per line, '#' comments and blank lines skipped; a missing file names its config field."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CurateError(f"curate.url_filter.{key}: {path}: no such file; give a local list (one entry per line) "
                          f"or remove it from curate.url_filter.{key}")
    lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    return [s for line in lines if (s := line.strip()) and not s.startswith("#")]


def user_lists(cfg: UrlFilterConfig) -> tuple[list[str], list[str]]:
    """(domains, urls) of the config: the inline entries and those of the files."""
    domains = [*cfg.domains, *(d for f in cfg.domain_files for d in read_list(f, "domain_files"))]
    urls = [*cfg.urls, *(u for f in cfg.url_files for u in read_list(f, "url_files"))]
    return [d.strip().lower() for d in domains], [url_key(u) for u in urls]


class BlocklistURLFilter(URLFilter):
    """datatrove's URLFilter, offline and with the domain list held as hashes (see the module docstring).

    `filter(doc)` -> True, or (False, datatrove's reason: domain / subdomain / url / hard_blacklisted /
    soft_blacklisted / blacklisted_subword). A document without a URL passes.
    """

    # datatrove's list also names fasteners (its lock for the cache extraction, which we do not use)
    _requires_dependencies = ["tldextract", ("ahocorasick", "pyahocorasick")]

    def __init__(self, cfg: UrlFilterConfig, domain_index_path: str | None = None):
        from tldextract import TLDExtract

        domains, urls = user_lists(cfg)
        super().__init__(soft_word_threshold=cfg.soft_word_threshold, use_integrated_lists=cfg.integrated_lists)
        # the public suffix list snapshot inside the tldextract wheel: no fetch, no cache folder
        self.tldextractor = TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)
        self.index_path = domain_index_path
        self.block_listed_domains = DomainSet(np.zeros(0, np.uint64), domains)
        self.block_listed_url = set(urls)
        # datatrove reads tldextract's registered_domain, deprecated in tldextract 5 (same value)
        warnings.filterwarnings("ignore", message=".*registered_domain.*", category=DeprecationWarning)

    def download_data(self):  # datatrove's name; nothing is downloaded here either
        if self._downloaded or not self.use_integrated_lists:
            return
        from gristmill.manifests import sha256_file

        path = self.index_path
        if not path or not Path(path).is_file():  # e.g. a Slurm node with another user cache
            path = str(domain_index(sha256_file(tarball_path())))
        self.block_listed_domains = DomainSet(np.load(path, mmap_mode="r"), self.block_listed_domains.extra)
        with tarfile.open(tarball_path(), "r:gz") as tar:
            member = tar.extractfile("urls")
            lines = member.read().decode("utf-8", "replace").splitlines() if member else []
        self.block_listed_url |= {url_key(s) for line in lines if (s := line.strip()) and not s.startswith("#")}
        self.banned_words = get_list(ASSETS_PATH, "banned_words.txt", self.banned_words)
        self.banned_subwords = get_list(ASSETS_PATH, "banned_subwords.txt", self.banned_subwords)
        self.soft_banned_words = get_list(ASSETS_PATH, "soft_banned_words.txt", self.soft_banned_words)
        for word in self.banned_subwords:
            self.banned_subwords_automaton.add_word(word, len(self.banned_subwords_automaton))
        self.banned_subwords_automaton.make_automaton()
        self._downloaded = True

    def filter(self, document) -> bool | tuple[bool, str]:
        url = document.metadata.get("url")
        if not url:
            return True  # JSONL records without a URL, .html files: nothing to check
        host = (urlsplit(url).hostname or "").rstrip(".")
        labels = host.split(".")
        if any(".".join(labels[i:]) in self.block_listed_domains.extra for i in range(len(labels))):
            return False, "domain"
        self.download_data()
        if url_key(url) in self.block_listed_url:
            return False, "url"
        return super().filter(document)


def url_verdict(filt: BlocklistURLFilter, doc) -> tuple[bool, str, str | None]:
    """(keep, reason, detail): reason url_blocklist, detail datatrove's rule and the host."""
    res = filt.filter(doc)
    if res is True or (isinstance(res, tuple) and res[0]):
        return True, "kept", None
    rule = res[1] if isinstance(res, tuple) else "blocked"
    host = urlsplit(doc.metadata["url"]).hostname or doc.metadata["url"]
    return False, REASON, f"{rule}: {host}"
