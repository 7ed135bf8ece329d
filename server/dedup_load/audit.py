"""What Milvus really holds, read directly (not through the front): the check behind "nothing acknowledged is lost"
and "nothing is stored twice"."""

from __future__ import annotations

from collections.abc import Iterable

from pymilvus import MilvusClient

COLLECTION_PREFIX = "dedup_"  # the front's default DEDUP_COLLECTION_PREFIX
_TIMEOUT_S = 60.0


class MilvusAudit:
    def __init__(self, milvus_uri: str, *, prefix: str = COLLECTION_PREFIX) -> None:
        self._client = MilvusClient(uri=milvus_uri, dedicated=True, timeout=_TIMEOUT_S)
        self._prefix = prefix

    def close(self) -> None:
        self._client.close()

    def ids(self, collection: str) -> list[str]:
        """Every row's id, with repeats if a row were stored twice."""
        name = self._prefix + collection
        self._client.load_collection(name, timeout=_TIMEOUT_S)  # after a restart it may still be loading
        iterator = self._client.query_iterator(
            name, batch_size=1000, filter='id != ""', output_fields=["id"], timeout=_TIMEOUT_S,
            consistency_level="Strong",
        )
        ids: list[str] = []
        try:
            while batch := iterator.next():
                ids.extend(str(row["id"]) for row in batch)
        finally:
            iterator.close()
        return ids

    def count(self, collection: str) -> int:
        rows = self._client.query(
            self._prefix + collection, filter="", output_fields=["count(*)"], consistency_level="Strong",
            timeout=_TIMEOUT_S,
        )
        return int(rows[0]["count(*)"])

    def missing(self, collection: str, ids: Iterable[str]) -> set[str]:
        """Those of `ids` that the collection does not hold."""
        return set(ids) - set(self.ids(collection))
