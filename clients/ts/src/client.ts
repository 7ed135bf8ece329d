/**
 * A small client for the dedup.v1.Deduplication gRPC service (Node, @grpc/grpc-js).
 *
 * One long-lived channel per client, closed with close(). Every unary call has a deadline
 * (the client's default or the call's own); a non-OK status rejects with DedupError.
 */
import { ChannelCredentials, Metadata, type ServiceError, status } from "@grpc/grpc-js";

import {
  CheckDuplicateRequest,
  type CheckDuplicateResponse,
  DeduplicationClient,
  IndexRequest,
  type IndexResponse,
} from "./gen/dedup/v1/dedup";

export const DEFAULT_TARGET = "127.0.0.1:50051";
export const DEFAULT_TIMEOUT_MS = 30_000;
// Images travel whole in one message; the server accepts up to 64 MiB.
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** A failed call: the gRPC status code by name (e.g. "INVALID_ARGUMENT") and the server's message. */
export class DedupError extends Error {
  constructor(
    readonly code: string,
    readonly details: string,
  ) {
    super(`${code}: ${details}`);
    this.name = "DedupError";
  }

  static fromServiceError(error: ServiceError): DedupError {
    return new DedupError(status[error.code] ?? "UNKNOWN", error.details || error.message);
  }
}

export interface ClientOptions {
  /** Default deadline of unary calls, in milliseconds. */
  timeoutMs?: number;
  /** TLS and friends; plaintext when left out. */
  credentials?: ChannelCredentials;
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
}

/** Everything of a CheckDuplicateRequest but the image; all optional. */
export type CheckOptions = Partial<Omit<CheckDuplicateRequest, "image">> & { timeoutMs?: number };

/** One image for IndexStream: fields left out take their proto defaults. */
export type IndexItem = Partial<IndexRequest> & Pick<IndexRequest, "id" | "image">;

export class DedupClient {
  private readonly stub: DeduplicationClient;
  private readonly timeoutMs: number;
  private readonly metadata: Metadata;

  constructor(
    readonly target: string = DEFAULT_TARGET,
    options: ClientOptions = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.metadata = new Metadata();
    if (options.token) {
      this.metadata.set("authorization", `Bearer ${options.token}`);
    }
    this.stub = new DeduplicationClient(target, options.credentials ?? ChannelCredentials.createInsecure(), {
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    });
  }

  close(): void {
    this.stub.close();
  }

  /** Is `image` a near-duplicate of an indexed one? Optionally index it when it is not. */
  check(image: Buffer, options: CheckOptions = {}): Promise<CheckDuplicateResponse> {
    const { timeoutMs, ...fields } = options;
    const request = CheckDuplicateRequest.fromPartial({ ...fields, image });
    return new Promise((resolve, reject) => {
      this.stub.checkDuplicate(request, this.metadata, { deadline: this.deadline(timeoutMs) }, (error, response) => {
        if (error) {
          reject(DedupError.fromServiceError(error));
        } else {
          resolve(response);
        }
      });
    });
  }

  /**
   * Stream `items` through IndexStream and yield one answer per item as it arrives (any order:
   * match them by id). Items are pulled as the stream drains, so an async generator that reads
   * files on demand keeps memory flat. `timeoutMs` bounds the whole stream (none by default: a
   * bulk ingest of unknown size has no sensible fixed deadline). Breaking out of the loop cancels it.
   */
  async *index(
    items: Iterable<IndexItem> | AsyncIterable<IndexItem>,
    options: { timeoutMs?: number } = {},
  ): AsyncGenerator<IndexResponse> {
    const callOptions = options.timeoutMs === undefined ? {} : { deadline: this.deadline(options.timeoutMs) };
    const call = this.stub.indexStream(this.metadata, callOptions);
    let ended = false; // the call has its final status: stop sending
    call.on("status", () => {
      ended = true;
    });
    const drainedOrEnded = () =>
      new Promise<void>((resolve) => {
        const done = () => {
          call.off("drain", done);
          call.off("status", done);
          resolve();
        };
        call.once("drain", done);
        call.once("status", done);
      });
    let sendError: unknown;
    const sending = (async () => {
      try {
        for await (const item of items) {
          if (ended) return;
          // write() returns false when the buffer is full: wait for it to drain (backpressure).
          if (!call.write(IndexRequest.fromPartial(item)) && !ended) {
            await drainedOrEnded();
          }
        }
        if (!ended) call.end();
      } catch (error) {
        sendError = error; // the caller's iterable failed: abort the stream, report this cause
        call.cancel();
      }
    })();
    try {
      for await (const response of call) {
        yield response as IndexResponse;
      }
    } catch (error) {
      await sending;
      if (sendError !== undefined) throw sendError;
      throw isServiceError(error) ? DedupError.fromServiceError(error) : error;
    } finally {
      call.cancel(); // no-op once finished; stops the upload when the caller broke out early
    }
    await sending;
    if (sendError !== undefined) throw sendError;
  }

  private deadline(timeoutMs: number | undefined): Date {
    return new Date(Date.now() + (timeoutMs ?? this.timeoutMs));
  }
}

function isServiceError(error: unknown): error is ServiceError {
  return typeof error === "object" && error !== null && "code" in error && "details" in error;
}
