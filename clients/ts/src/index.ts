export {
  type CheckOptions,
  type ClientOptions,
  DEFAULT_TARGET,
  DEFAULT_TIMEOUT_MS,
  DedupClient,
  DedupError,
  type IndexItem,
  MAX_MESSAGE_BYTES,
} from "./client";
export * as dedupv1 from "./gen/dedup/v1/dedup";
