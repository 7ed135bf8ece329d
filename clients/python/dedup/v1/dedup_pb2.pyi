from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FlipPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLIP_POLICY_UNSPECIFIED: _ClassVar[FlipPolicy]
    FLIP_POLICY_MIRROR_IS_DUPLICATE: _ClassVar[FlipPolicy]
    FLIP_POLICY_MIRROR_IS_DISTINCT: _ClassVar[FlipPolicy]

class KeepPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEEP_POLICY_UNSPECIFIED: _ClassVar[KeepPolicy]
    KEEP_POLICY_LARGEST: _ClassVar[KeepPolicy]
    KEEP_POLICY_ORIGINAL_FORMAT: _ClassVar[KeepPolicy]
    KEEP_POLICY_OLDEST: _ClassVar[KeepPolicy]
    KEEP_POLICY_NEWEST: _ClassVar[KeepPolicy]
FLIP_POLICY_UNSPECIFIED: FlipPolicy
FLIP_POLICY_MIRROR_IS_DUPLICATE: FlipPolicy
FLIP_POLICY_MIRROR_IS_DISTINCT: FlipPolicy
KEEP_POLICY_UNSPECIFIED: KeepPolicy
KEEP_POLICY_LARGEST: KeepPolicy
KEEP_POLICY_ORIGINAL_FORMAT: KeepPolicy
KEEP_POLICY_OLDEST: KeepPolicy
KEEP_POLICY_NEWEST: KeepPolicy

class CheckDuplicateRequest(_message.Message):
    __slots__ = ("image", "collection", "threshold", "top_k", "insert_if_unique", "id", "metadata", "flip_policy", "cosine_only")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    INSERT_IF_UNIQUE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    FLIP_POLICY_FIELD_NUMBER: _ClassVar[int]
    COSINE_ONLY_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    collection: str
    threshold: float
    top_k: int
    insert_if_unique: bool
    id: str
    metadata: _containers.ScalarMap[str, str]
    flip_policy: FlipPolicy
    cosine_only: bool
    def __init__(self, image: _Optional[bytes] = ..., collection: _Optional[str] = ..., threshold: _Optional[float] = ..., top_k: _Optional[int] = ..., insert_if_unique: _Optional[bool] = ..., id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., flip_policy: _Optional[_Union[FlipPolicy, str]] = ..., cosine_only: _Optional[bool] = ...) -> None: ...

class Match(_message.Message):
    __slots__ = ("id", "similarity", "metadata", "mirrored", "verified", "inliers", "framed")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    MIRRORED_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    INLIERS_FIELD_NUMBER: _ClassVar[int]
    FRAMED_FIELD_NUMBER: _ClassVar[int]
    id: str
    similarity: float
    metadata: _containers.ScalarMap[str, str]
    mirrored: bool
    verified: bool
    inliers: int
    framed: bool
    def __init__(self, id: _Optional[str] = ..., similarity: _Optional[float] = ..., metadata: _Optional[_Mapping[str, str]] = ..., mirrored: _Optional[bool] = ..., verified: _Optional[bool] = ..., inliers: _Optional[int] = ..., framed: _Optional[bool] = ...) -> None: ...

class CheckDuplicateResponse(_message.Message):
    __slots__ = ("is_duplicate", "matches", "inserted", "model", "threshold")
    IS_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    is_duplicate: bool
    matches: _containers.RepeatedCompositeFieldContainer[Match]
    inserted: bool
    model: str
    threshold: float
    def __init__(self, is_duplicate: _Optional[bool] = ..., matches: _Optional[_Iterable[_Union[Match, _Mapping]]] = ..., inserted: _Optional[bool] = ..., model: _Optional[str] = ..., threshold: _Optional[float] = ...) -> None: ...

class IndexRequest(_message.Message):
    __slots__ = ("id", "image", "metadata", "collection", "skip_duplicates", "threshold", "flip_policy")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SKIP_DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FLIP_POLICY_FIELD_NUMBER: _ClassVar[int]
    id: str
    image: bytes
    metadata: _containers.ScalarMap[str, str]
    collection: str
    skip_duplicates: bool
    threshold: float
    flip_policy: FlipPolicy
    def __init__(self, id: _Optional[str] = ..., image: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ..., collection: _Optional[str] = ..., skip_duplicates: _Optional[bool] = ..., threshold: _Optional[float] = ..., flip_policy: _Optional[_Union[FlipPolicy, str]] = ...) -> None: ...

class IndexResponse(_message.Message):
    __slots__ = ("id", "status", "matches", "error")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[IndexResponse.Status]
        INDEXED: _ClassVar[IndexResponse.Status]
        DUPLICATE: _ClassVar[IndexResponse.Status]
        INVALID: _ClassVar[IndexResponse.Status]
        FAILED: _ClassVar[IndexResponse.Status]
    STATUS_UNSPECIFIED: IndexResponse.Status
    INDEXED: IndexResponse.Status
    DUPLICATE: IndexResponse.Status
    INVALID: IndexResponse.Status
    FAILED: IndexResponse.Status
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: IndexResponse.Status
    matches: _containers.RepeatedCompositeFieldContainer[Match]
    error: str
    def __init__(self, id: _Optional[str] = ..., status: _Optional[_Union[IndexResponse.Status, str]] = ..., matches: _Optional[_Iterable[_Union[Match, _Mapping]]] = ..., error: _Optional[str] = ...) -> None: ...

class DeleteImagesRequest(_message.Message):
    __slots__ = ("ids", "collection")
    IDS_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    collection: str
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., collection: _Optional[str] = ...) -> None: ...

class DeleteImagesResponse(_message.Message):
    __slots__ = ("deleted_count", "not_found")
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    not_found: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted_count: _Optional[int] = ..., not_found: _Optional[_Iterable[str]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "embedding_dim", "fallback", "warning")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    embedding_dim: int
    fallback: bool
    warning: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., embedding_dim: _Optional[int] = ..., fallback: _Optional[bool] = ..., warning: _Optional[str] = ...) -> None: ...

class IndexInfo(_message.Message):
    __slots__ = ("index_type", "build_params", "search_params", "metric")
    class BuildParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class SearchParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    INDEX_TYPE_FIELD_NUMBER: _ClassVar[int]
    BUILD_PARAMS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_PARAMS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    index_type: str
    build_params: _containers.ScalarMap[str, str]
    search_params: _containers.ScalarMap[str, str]
    metric: str
    def __init__(self, index_type: _Optional[str] = ..., build_params: _Optional[_Mapping[str, str]] = ..., search_params: _Optional[_Mapping[str, str]] = ..., metric: _Optional[str] = ...) -> None: ...

class CollectionStats(_message.Message):
    __slots__ = ("name", "image_count", "model", "index")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    name: str
    image_count: int
    model: str
    index: IndexInfo
    def __init__(self, name: _Optional[str] = ..., image_count: _Optional[int] = ..., model: _Optional[str] = ..., index: _Optional[_Union[IndexInfo, _Mapping]] = ...) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("collections", "model", "index", "default_threshold", "default_top_k", "threshold_source", "calibration")
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TOP_K_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_SOURCE_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionStats]
    model: ModelInfo
    index: IndexInfo
    default_threshold: float
    default_top_k: int
    threshold_source: str
    calibration: ThresholdCalibration
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionStats, _Mapping]]] = ..., model: _Optional[_Union[ModelInfo, _Mapping]] = ..., index: _Optional[_Union[IndexInfo, _Mapping]] = ..., default_threshold: _Optional[float] = ..., default_top_k: _Optional[int] = ..., threshold_source: _Optional[str] = ..., calibration: _Optional[_Union[ThresholdCalibration, _Mapping]] = ...) -> None: ...

class ThresholdCalibration(_message.Message):
    __slots__ = ("model", "threshold", "dataset", "precision", "recall", "f1", "queries", "distractor_queries", "false_alarms", "measured_at", "match_precision", "verify_below", "verify_above", "verify_min_inliers", "verify_min_coverage", "false_alarm_rate_1m", "false_alarm_rate_1m_low", "false_alarm_rate_1m_high", "micro_ap", "recall_at_precision_99", "recall_at_precision_999", "bytes_per_image")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    F1_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    DISTRACTOR_QUERIES_FIELD_NUMBER: _ClassVar[int]
    FALSE_ALARMS_FIELD_NUMBER: _ClassVar[int]
    MEASURED_AT_FIELD_NUMBER: _ClassVar[int]
    MATCH_PRECISION_FIELD_NUMBER: _ClassVar[int]
    VERIFY_BELOW_FIELD_NUMBER: _ClassVar[int]
    VERIFY_ABOVE_FIELD_NUMBER: _ClassVar[int]
    VERIFY_MIN_INLIERS_FIELD_NUMBER: _ClassVar[int]
    VERIFY_MIN_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    FALSE_ALARM_RATE_1M_FIELD_NUMBER: _ClassVar[int]
    FALSE_ALARM_RATE_1M_LOW_FIELD_NUMBER: _ClassVar[int]
    FALSE_ALARM_RATE_1M_HIGH_FIELD_NUMBER: _ClassVar[int]
    MICRO_AP_FIELD_NUMBER: _ClassVar[int]
    RECALL_AT_PRECISION_99_FIELD_NUMBER: _ClassVar[int]
    RECALL_AT_PRECISION_999_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    model: str
    threshold: float
    dataset: str
    precision: float
    recall: float
    f1: float
    queries: int
    distractor_queries: int
    false_alarms: int
    measured_at: str
    match_precision: float
    verify_below: float
    verify_above: float
    verify_min_inliers: int
    verify_min_coverage: float
    false_alarm_rate_1m: float
    false_alarm_rate_1m_low: float
    false_alarm_rate_1m_high: float
    micro_ap: float
    recall_at_precision_99: float
    recall_at_precision_999: float
    bytes_per_image: int
    def __init__(self, model: _Optional[str] = ..., threshold: _Optional[float] = ..., dataset: _Optional[str] = ..., precision: _Optional[float] = ..., recall: _Optional[float] = ..., f1: _Optional[float] = ..., queries: _Optional[int] = ..., distractor_queries: _Optional[int] = ..., false_alarms: _Optional[int] = ..., measured_at: _Optional[str] = ..., match_precision: _Optional[float] = ..., verify_below: _Optional[float] = ..., verify_above: _Optional[float] = ..., verify_min_inliers: _Optional[int] = ..., verify_min_coverage: _Optional[float] = ..., false_alarm_rate_1m: _Optional[float] = ..., false_alarm_rate_1m_low: _Optional[float] = ..., false_alarm_rate_1m_high: _Optional[float] = ..., micro_ap: _Optional[float] = ..., recall_at_precision_99: _Optional[float] = ..., recall_at_precision_999: _Optional[float] = ..., bytes_per_image: _Optional[int] = ...) -> None: ...

class FindDuplicateGroupsRequest(_message.Message):
    __slots__ = ("collection", "threshold", "flip_policy", "top_k", "keep", "min_group_size", "limit", "cosine_only")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FLIP_POLICY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    MIN_GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    COSINE_ONLY_FIELD_NUMBER: _ClassVar[int]
    collection: str
    threshold: float
    flip_policy: FlipPolicy
    top_k: int
    keep: KeepPolicy
    min_group_size: int
    limit: int
    cosine_only: bool
    def __init__(self, collection: _Optional[str] = ..., threshold: _Optional[float] = ..., flip_policy: _Optional[_Union[FlipPolicy, str]] = ..., top_k: _Optional[int] = ..., keep: _Optional[_Union[KeepPolicy, str]] = ..., min_group_size: _Optional[int] = ..., limit: _Optional[int] = ..., cosine_only: _Optional[bool] = ...) -> None: ...

class DuplicatePair(_message.Message):
    __slots__ = ("id_a", "id_b", "similarity", "mirrored")
    ID_A_FIELD_NUMBER: _ClassVar[int]
    ID_B_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    MIRRORED_FIELD_NUMBER: _ClassVar[int]
    id_a: str
    id_b: str
    similarity: float
    mirrored: bool
    def __init__(self, id_a: _Optional[str] = ..., id_b: _Optional[str] = ..., similarity: _Optional[float] = ..., mirrored: _Optional[bool] = ...) -> None: ...

class GroupMember(_message.Message):
    __slots__ = ("id", "similarity", "closest", "keeper", "mirrored", "metadata", "width", "height", "bytes", "format", "indexed_at_ms")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    CLOSEST_FIELD_NUMBER: _ClassVar[int]
    KEEPER_FIELD_NUMBER: _ClassVar[int]
    MIRRORED_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    INDEXED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    similarity: float
    closest: str
    keeper: bool
    mirrored: bool
    metadata: _containers.ScalarMap[str, str]
    width: int
    height: int
    bytes: int
    format: str
    indexed_at_ms: int
    def __init__(self, id: _Optional[str] = ..., similarity: _Optional[float] = ..., closest: _Optional[str] = ..., keeper: _Optional[bool] = ..., mirrored: _Optional[bool] = ..., metadata: _Optional[_Mapping[str, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., bytes: _Optional[int] = ..., format: _Optional[str] = ..., indexed_at_ms: _Optional[int] = ...) -> None: ...

class DuplicateGroup(_message.Message):
    __slots__ = ("ids", "pairs", "members", "keeper")
    IDS_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    KEEPER_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    pairs: _containers.RepeatedCompositeFieldContainer[DuplicatePair]
    members: _containers.RepeatedCompositeFieldContainer[GroupMember]
    keeper: str
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., pairs: _Optional[_Iterable[_Union[DuplicatePair, _Mapping]]] = ..., members: _Optional[_Iterable[_Union[GroupMember, _Mapping]]] = ..., keeper: _Optional[str] = ...) -> None: ...

class ScanProgress(_message.Message):
    __slots__ = ("scanned", "total")
    SCANNED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    scanned: int
    total: int
    def __init__(self, scanned: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class FindDuplicateGroupsResponse(_message.Message):
    __slots__ = ("progress", "group")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    progress: ScanProgress
    group: DuplicateGroup
    def __init__(self, progress: _Optional[_Union[ScanProgress, _Mapping]] = ..., group: _Optional[_Union[DuplicateGroup, _Mapping]] = ...) -> None: ...
