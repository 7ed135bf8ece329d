"""The vector index: one Milvus collection per dedup collection, through pymilvus' MilvusClient.

The URI decides the backend: a Milvus Lite database path, the local embedded standalone server,
or a production cluster. Methods are synchronous (pymilvus is); the service runs them in a
thread. Every collection records the embedding model it was built with, and refuses another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any

import grpc
import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from . import metrics
from .config import IndexConfig, milvus_backend_kind
from .errors import BackendError, BackendUnavailable, CollectionNotFound, InvalidRequest, ModelMismatch
from .model_identity import ModelInfo

logger = logging.getLogger(__name__)

# What users call collections (tenants): my-photos, a UUID, tenant-42, photos.2026. Never path-like: no "/" or "\\",
# no "..", not "." alone.
COLLECTION_NAME = re.compile(r"^(?!\.+$)(?!.*\.\.)[A-Za-z0-9._-]{1,255}$")
# The first scheme's names (Milvus-safe already): they map to Milvus as they are, so their collections keep working.
LEGACY_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9_]{1,128}$")
MAX_MILVUS_NAME = 255  # Milvus: [A-Za-z0-9_], starting with a letter or "_", at most 255 characters
# The user's name of a collection, recorded at creation (other names are hashed into the Milvus name).
NAME_PROPERTY = "dedup.name"
# Reserved metadata key: the image's layout (layout.py), stored beside the client's metadata.
LAYOUT_KEY = "_dedup_layout"
ID_FIELD, VECTOR_FIELD, METADATA_FIELD, MODEL_FIELD, INSERTED_AT_FIELD, SIGNATURE_FIELD = (
    "id", "vector", "metadata", "model", "inserted_at", "signature",
)
# The signature (verification/signature.py) is base64 text: Milvus 2.3 has no bytes type; VARCHAR holds 65,535.
MAX_SIGNATURE_LENGTH = 65_535
MODEL_PROPERTY = "dedup.model"
MAX_ID_LENGTH = 512
METRIC = "COSINE"
# Read-your-writes: a search sees every insert this client made before it. That (plus the
# serialised write stage) is what makes check-and-insert race-free without a Strong wait.
CONSISTENCY = "Session"


# describe_index() keys that are not build parameters.
_INDEX_DESCRIPTION_KEYS = frozenset({
    "index_type", "metric_type", "field_name", "index_name", "total_rows", "indexed_rows", "pending_index_rows",
    "state",
})


@dataclasses.dataclass(frozen=True, slots=True)
class Hit:
    id: str
    similarity: float
    metadata: Mapping[str, str]
    layout: str = ""  # the stored image's layout (layout.py); "" when stored before layouts existed
    mirrored: bool = False  # the stored image is the query mirrored (see flip.py)
    verified: bool = False  # geometric verification ran and passed (verification/)
    inliers: int = 0  # keypoint matches that agreed, when verification ran
    framed: bool = False  # the similarity is the framed photo's (framing.py): never a duplicate on cosine alone


@dataclasses.dataclass(frozen=True, slots=True)
class StoredImage:
    id: str
    vector: np.ndarray
    metadata: Mapping[str, str]
    layout: str = ""
    signature: str = ""  # verification/signature.py; "" when unknown
    inserted_at: int = 0  # Unix ms of the write (read by scan); 0 when not read


@dataclasses.dataclass(frozen=True, kw_only=True)
class IndexDescription:
    index_type: str
    build_params: Mapping[str, str]
    search_params: Mapping[str, str]
    metric: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class CollectionStats:
    name: str
    image_count: int
    model: str
    index: IndexDescription


@dataclasses.dataclass(frozen=True, slots=True)
class _CollectionState:
    milvus_name: str
    model: str
    has_signatures: bool = True  # collections created before signatures existed have no such field


def validate_collection_name(name: str) -> None:
    if not COLLECTION_NAME.match(name):
        raise InvalidRequest(
            f"collection name {name!r} is invalid: use 1-255 letters, digits, '-', '_' or '.' "
            "(not path-like: no '..', not '.')"
        )


def milvus_collection_name(prefix: str, name: str) -> str:
    """The Milvus collection of a (valid) collection name.

    Names of the first scheme (1-128 letters, digits, underscores) are the prefix plus the name, as they always
    were. Any other name is made Milvus-safe, readable, and told apart by a hash of the whole name:
    ``my-photos`` -> ``dedup_my_photos__<16 hex>``. No reversible escape fits every 255-character name into 255
    Milvus characters, so the user's name is recorded with the collection (NAME_PROPERTY) and read back from there;
    opening checks it, so two names can never share a Milvus collection unnoticed.
    """
    if LEGACY_COLLECTION_NAME.match(name):
        return prefix + name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9_]", "_", name)[: MAX_MILVUS_NAME - len(prefix) - len(digest) - 3]
    milvus_name = f"{prefix}{readable}__{digest}"
    return milvus_name if re.match(r"[A-Za-z_]", milvus_name) else "_" + milvus_name


class MilvusIndex:
    def __init__(
        self, *, uri: str, token: str, prefix: str, index: IndexConfig, call_timeout_s: float = 30.0
    ) -> None:
        self._uri = uri
        self._call_timeout_s = call_timeout_s  # of each call that is given no timeout of its own
        self._prefix = prefix
        self._index = index
        self._backend = milvus_backend_kind(uri)
        kwargs: dict[str, Any] = {"uri": uri, "timeout": 30.0}
        if token:
            kwargs["token"] = token
        if self._backend == "server":
            # Long calls (index builds) otherwise die with GOAWAY too_many_pings (notes, trap 3).
            kwargs["grpc_options"] = {
                "grpc.keepalive_time_ms": 600_000,
                # Reconnect soon after Milvus comes back (gRPC's default backoff grows to 120 s).
                "grpc.initial_reconnect_backoff_ms": 200,
                "grpc.max_reconnect_backoff_ms": 2_000,
            }
        try:
            self._client = MilvusClient(**kwargs)
        except MilvusException as exc:
            raise BackendUnavailable(f"cannot connect to Milvus at {uri}: {exc.message}") from exc
        self._collections: dict[str, _CollectionState] = {}
        self._has_signatures: dict[str, bool] = {}  # by Milvus name
        self._lock = threading.Lock()  # guards collection creation and the cache

    @property
    def uri(self) -> str:
        return self._uri

    def close(self) -> None:
        self._client.close()

    def ping(self) -> bool:
        try:
            self._client.list_collections(timeout=3.0)
            return True
        except Exception:  # any failure means "not answering"; the health loop logs transitions
            return False

    def describe_config(self, top_k: int) -> IndexDescription:
        return IndexDescription(
            index_type=self._index.index_type,
            build_params={k: str(v) for k, v in self._index.build_params().items()},
            search_params={k: str(v) for k, v in self._index.search_params(top_k).items()},
            metric=METRIC,
        )

    # -- collections -------------------------------------------------------------------------

    def open_collection(self, name: str, model: ModelInfo, *, create: bool) -> str:
        """Milvus name of the collection, created when `create`; checks it was built with `model`."""
        validate_collection_name(name)
        state = self._collections.get(name)
        if state is None:
            with self._lock:
                state = self._collections.get(name) or self._load_or_create(name, model, create)
                self._collections[name] = state
                self._has_signatures[state.milvus_name] = state.has_signatures
        if state.model != model.label:
            raise ModelMismatch(name, state.model, model.label)
        return state.milvus_name

    def opened(self, name: str, model: ModelInfo) -> str | None:
        """Milvus name of a collection this process has opened before, without I/O; None when it has not."""
        state = self._collections.get(name)
        if state is None:
            return None
        if state.model != model.label:
            raise ModelMismatch(name, state.model, model.label)
        return state.milvus_name

    def _load_or_create(self, name: str, model: ModelInfo, create: bool) -> _CollectionState:
        milvus_name = milvus_collection_name(self._prefix, name)
        with _milvus_errors(f"open collection {name!r}"):
            if self._client.has_collection(milvus_name, timeout=self._call_timeout_s):
                described = self._client.describe_collection(milvus_name, timeout=self._call_timeout_s)
                _check_recorded_name(described, name, milvus_name)
                recorded = _recorded_model(described, milvus_name)
                if recorded == model.label:
                    self._ensure_loaded(milvus_name)
                fields = {str(field.get("name")) for field in described.get("fields", [])}
                return _CollectionState(milvus_name, recorded, has_signatures=SIGNATURE_FIELD in fields)
            if not create:
                raise CollectionNotFound(name)
            self._create(milvus_name, model, name)
            return _CollectionState(milvus_name, model.label)

    def _ensure_loaded(self, milvus_name: str) -> None:
        state = self._client.get_load_state(milvus_name, timeout=self._call_timeout_s).get("state")
        if str(state) != "Loaded":
            logger.info("loading collection %s (state %s)", milvus_name, state)
            self._client.load_collection(milvus_name, timeout=self._call_timeout_s)

    def _create(self, milvus_name: str, model: ModelInfo, name: str) -> None:
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=MAX_ID_LENGTH)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=model.embedding_dim)
        schema.add_field(METADATA_FIELD, DataType.JSON)
        schema.add_field(MODEL_FIELD, DataType.VARCHAR, max_length=256)
        schema.add_field(INSERTED_AT_FIELD, DataType.INT64)
        schema.add_field(SIGNATURE_FIELD, DataType.VARCHAR, max_length=MAX_SIGNATURE_LENGTH)
        index_params = self._client.prepare_index_params()
        # Nested "params": milvus-lite ignores flattened ones (notes, trap 1); the server accepts both.
        index_params.add_index(
            field_name=VECTOR_FIELD,
            index_type=self._index.index_type,
            metric_type=METRIC,
            params={"params": self._index.build_params()},
        )
        description = json.dumps(
            {"model": model.label, "dim": model.embedding_dim, "created_by": "dedup", "name": name}
        )
        self._client.create_collection(
            milvus_name,
            schema=schema,
            index_params=index_params,
            consistency_level=CONSISTENCY,
            description=description,
            properties={MODEL_PROPERTY: model.label, NAME_PROPERTY: name},
        )
        logger.info(
            "created collection %s (%s %s, model %s, dim %d)",
            milvus_name, self._index.index_type, self._index.build_params(), model.label, model.embedding_dim,
        )

    def has_signatures(self, milvus_name: str) -> bool:
        """Whether an opened collection stores signatures (those created before signatures existed do not)."""
        return self._has_signatures.get(milvus_name, False)

    def forget(self, name: str) -> None:
        """Drop cached state (after a backend error that may mean the collection changed)."""
        with self._lock:
            self._collections.pop(name, None)

    # -- data ----------------------------------------------------------------------------------

    def search(
        self, milvus_name: str, vectors: np.ndarray, top_k: int, *, timeout_s: float | None = None,
        consistency: str | None = None, with_metadata: bool = True,
    ) -> list[list[Hit]]:
        """Nearest stored images for each vector, best first. `consistency`: Milvus' level (default Session:
        this client's writes); "Strong" also shows other clients' writes, e.g. another front's (coordination/).
        ``with_metadata=False``: ids and similarities only, the hits' metadata and layout empty (a scan of millions
        reads them for its few matches, ``described``: parsing every hit's JSON cost more than the search)."""
        with _milvus_errors("search"), metrics.MILVUS_SECONDS.labels("search").time():
            results = self._client.search(
                milvus_name,
                data=[vector.tolist() for vector in vectors],
                limit=top_k,
                anns_field=VECTOR_FIELD,
                search_params={"metric_type": METRIC, "params": self._index.search_params(top_k)},
                output_fields=[METADATA_FIELD] if with_metadata else [],
                consistency_level=consistency or CONSISTENCY,
                timeout=self._call_timeout_s if timeout_s is None else timeout_s,
            )
        return [
            [
                _hit(hit)
                for hit in hits
            ]
            for hits in results
        ]

    def upsert(
        self, milvus_name: str, model: ModelInfo, images: Sequence[StoredImage], *, timeout_s: float | None = None
    ) -> None:
        """Store images; an id that exists is replaced. Returns once Milvus has acknowledged them."""
        if not images:
            return
        now_ms = int(time.time() * 1000)
        with_signature = self._has_signatures.get(milvus_name, True)
        rows = [
            {
                ID_FIELD: image.id,
                VECTOR_FIELD: image.vector.tolist(),
                # The layout travels in the JSON field, under a key clients cannot use (validation.metadata).
                METADATA_FIELD: {**image.metadata, LAYOUT_KEY: image.layout} if image.layout else dict(image.metadata),
                MODEL_FIELD: model.label,
                INSERTED_AT_FIELD: now_ms,
                **({SIGNATURE_FIELD: image.signature[:MAX_SIGNATURE_LENGTH]} if with_signature else {}),
            }
            for image in images
        ]
        with _milvus_errors("upsert"), metrics.MILVUS_SECONDS.labels("upsert").time():
            self._client.upsert(
                milvus_name, data=rows, timeout=self._call_timeout_s if timeout_s is None else timeout_s
            )

    def described(
        self, milvus_name: str, hits: Sequence[Hit], *, timeout_s: float | None = None
    ) -> list[Hit]:
        """``hits`` (of a search ``with_metadata=False``) with their stored metadata and layout; one Milvus read."""
        if not hits:
            return []
        ids = sorted({hit.id for hit in hits})
        with _milvus_errors("get metadata"), metrics.MILVUS_SECONDS.labels("get").time():
            rows = self._client.get(
                milvus_name, ids=ids, output_fields=[ID_FIELD, METADATA_FIELD],
                timeout=self._call_timeout_s if timeout_s is None else timeout_s,
            )
        stored = {str(row[ID_FIELD]): row.get(METADATA_FIELD) for row in rows}
        described = []
        for hit in hits:
            metadata, layout = _metadata_and_layout(stored.get(hit.id))
            described.append(dataclasses.replace(hit, metadata=metadata, layout=layout))
        return described

    def signatures(
        self, milvus_name: str, ids: Sequence[str], *, timeout_s: float | None = None
    ) -> dict[str, str]:
        """The stored signatures of ``ids`` (ids without one, or collections from before signatures, are absent)."""
        if not ids or not self._has_signatures.get(milvus_name, True):
            return {}
        with _milvus_errors("get signatures"), metrics.MILVUS_SECONDS.labels("get").time():
            rows = self._client.get(
                milvus_name, ids=list(ids), output_fields=[ID_FIELD, SIGNATURE_FIELD],
                timeout=self._call_timeout_s if timeout_s is None else timeout_s,
            )
        return {str(row[ID_FIELD]): str(row[SIGNATURE_FIELD]) for row in rows if row.get(SIGNATURE_FIELD)}

    def scan(
        self, milvus_name: str, *, batch_size: int, timeout_s: float | None = None, vectors: bool = True
    ) -> Generator[list[StoredImage], None, None]:
        """Every stored image (id and, unless ``vectors`` is False, vector: an empty one then), a batch at a time, in
        the collection's primary-key order; blocking: pull batches from a thread."""
        fields = [ID_FIELD, VECTOR_FIELD, METADATA_FIELD, INSERTED_AT_FIELD] if vectors else \
            [ID_FIELD, METADATA_FIELD, INSERTED_AT_FIELD]
        with _milvus_errors("scan"):
            iterator = self._client.query_iterator(
                milvus_name, batch_size=batch_size, filter="", output_fields=fields,
                timeout=self._call_timeout_s if timeout_s is None else timeout_s,
            )
        try:
            while True:
                with _milvus_errors("scan"):
                    rows = iterator.next()
                if not rows:
                    return
                yield [_stored(row) for row in rows]
        finally:
            iterator.close()

    def count(self, milvus_name: str) -> int:
        # Strong: counts are rare, and must reflect deletes too.
        with _milvus_errors("count"):
            rows = self._client.query(
                milvus_name, filter="", output_fields=["count(*)"], consistency_level="Strong",
                timeout=self._call_timeout_s,
            )
        return int(rows[0]["count(*)"]) if rows else 0

    def delete(self, milvus_name: str, ids: Sequence[str]) -> tuple[int, list[str]]:
        """Delete ids; returns (how many existed, the ids that did not)."""
        with _milvus_errors("delete"):
            existing = {
                str(row[ID_FIELD])
                for row in self._client.get(
                    milvus_name, ids=list(ids), output_fields=[ID_FIELD], timeout=self._call_timeout_s
                )
            }
            if existing:
                self._client.delete(milvus_name, ids=sorted(existing), timeout=self._call_timeout_s)
        return len(existing), [i for i in ids if i not in existing]

    def stats(self, name: str | None) -> list[CollectionStats]:
        """Every collection under this prefix by the user's name (or the one named), sorted by name."""
        with _milvus_errors("stats"):
            if name is not None:
                validate_collection_name(name)
                milvus_name = milvus_collection_name(self._prefix, name)
                if not self._client.has_collection(milvus_name, timeout=self._call_timeout_s):
                    raise CollectionNotFound(name)
                described = self._client.describe_collection(milvus_name, timeout=self._call_timeout_s)
                if _user_name(described, milvus_name, self._prefix) != name:
                    raise CollectionNotFound(name)  # another name's collection (see milvus_collection_name)
                found = [(name, milvus_name, described)]
            else:
                listed = self._client.list_collections(timeout=self._call_timeout_s)
                found = []
                for milvus_name in listed:
                    if milvus_name.startswith(self._prefix):
                        described = self._client.describe_collection(milvus_name, timeout=self._call_timeout_s)
                        found.append((_user_name(described, milvus_name, self._prefix), milvus_name, described))
                found.sort(key=lambda entry: entry[0])
            return [self._collection_stats(n, m, d) for n, m, d in found]

    def _collection_stats(self, name: str, milvus_name: str, described: Mapping[str, Any]) -> CollectionStats:
        self._ensure_loaded(milvus_name)
        count = self.count(milvus_name)
        index = self._client.describe_index(milvus_name, index_name=VECTOR_FIELD, timeout=self._call_timeout_s) or {}
        index_type = str(index.get("index_type", ""))
        build = {k: str(v) for k, v in index.items() if k not in _INDEX_DESCRIPTION_KEYS}
        if "params" in build:  # nested form (see _create): flatten for display
            try:
                build = {k: str(v) for k, v in json.loads(build["params"].replace("'", '"')).items()}
            except ValueError:
                pass
        return CollectionStats(
            name=name,
            image_count=count,
            model=_recorded_model(described, milvus_name),
            index=IndexDescription(
                index_type=index_type,
                build_params=build,
                search_params={},
                metric=str(index.get("metric_type", METRIC)),
            ),
        )


def _recorded_model(described: Mapping[str, Any], milvus_name: str) -> str:
    # Recorded twice at creation: Milvus Lite keeps properties but drops descriptions.
    recorded = (described.get("properties") or {}).get(MODEL_PROPERTY)
    if recorded:
        return str(recorded)
    try:
        return str(json.loads(described.get("description", ""))["model"])
    except (ValueError, KeyError, TypeError):
        return f"unknown (collection {milvus_name!r} was not created by this service)"


def _recorded_name(described: Mapping[str, Any]) -> str | None:
    """The user's name recorded at creation (None: created before names were recorded, or not by this service)."""
    recorded = (described.get("properties") or {}).get(NAME_PROPERTY)
    if recorded:
        return str(recorded)
    try:
        named = json.loads(described.get("description", "")).get("name")
    except (ValueError, AttributeError, TypeError):
        return None
    return str(named) if named else None


def _user_name(described: Mapping[str, Any], milvus_name: str, prefix: str) -> str:
    return _recorded_name(described) or milvus_name[len(prefix):]


def _check_recorded_name(described: Mapping[str, Any], name: str, milvus_name: str) -> None:
    """Refuse a Milvus collection that holds another name's images (a hash collision, or a first-scheme name that
    happens to read like a hashed one): never mix two tenants."""
    recorded = _recorded_name(described)
    if recorded == name or (recorded is None and LEGACY_COLLECTION_NAME.match(name)):
        return
    raise InvalidRequest(
        f"collection name {name!r} maps to the Milvus collection {milvus_name!r}, which holds "
        f"{'collection ' + repr(recorded) if recorded else 'a collection of another name'}: choose another name"
    )


def _stored(row: Mapping[str, Any]) -> StoredImage:
    metadata = _as_str_map(row.get(METADATA_FIELD))
    layout = metadata.pop(LAYOUT_KEY, "")
    return StoredImage(id=str(row[ID_FIELD]), vector=np.asarray(row.get(VECTOR_FIELD, ()), dtype=np.float32),
                       metadata=metadata, layout=layout, inserted_at=int(row.get(INSERTED_AT_FIELD) or 0))


def _hit(hit: Mapping[str, Any]) -> Hit:
    metadata, layout = _metadata_and_layout(hit.get("entity", {}).get(METADATA_FIELD))
    return Hit(id=str(hit["id"]), similarity=float(hit["distance"]), metadata=metadata, layout=layout)


def _metadata_and_layout(stored: Any) -> tuple[dict[str, str], str]:
    """A stored metadata field as the caller's metadata and the layout the front keeps beside it."""
    metadata = _as_str_map(stored)
    return metadata, metadata.pop(LAYOUT_KEY, "")


def _as_str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


@contextlib.contextmanager
def _milvus_errors(what: str) -> Iterator[None]:
    """Turn pymilvus and channel errors into domain errors, keeping the cause."""
    try:
        yield
    except MilvusException as exc:
        message = f"Milvus {what} failed: {exc.message}"
        text = str(exc).lower()
        # "not loaded": Milvus is loading its collections again after a restart (measured: ~5 s).
        if any(word in text for word in ("unavailable", "connect", "deadline", "timeout", "not loaded")):
            raise BackendUnavailable(message) from exc
        raise BackendError(message) from exc
    except (grpc.RpcError, ConnectionError, TimeoutError) as exc:  # a dead channel surfaces raw
        raise BackendUnavailable(f"Milvus {what} failed: {exc}") from exc
