/**
 * Quickstart: index a few images with IndexStream, then ask CheckDuplicate about a grey copy of
 * one of them (a duplicate), an unrelated photo (not one) and bytes that are no image
 * (INVALID_ARGUMENT). Every call has a deadline; each answer is checked, and the exit status is 1
 * when one is wrong.
 *
 *   npm run build && node dist/examples/quickstart.js [--target HOST:PORT] [IMAGE_OR_DIR ...]
 */
import { readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";

import { DEFAULT_TARGET, DedupClient, DedupError, type IndexItem } from "../src";
import { IndexResponse_Status, indexResponse_StatusToJSON } from "../src/gen/dedup/v1/dedup";

const EVAL_DIR = "../shared/eval/imagededup";
const IMAGE_EXTENSIONS = new Set([
  ".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm",
]);

const { values: flags, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    target: { type: "string", default: process.env.DEDUP_TARGET || DEFAULT_TARGET },
    collection: { type: "string", default: "quickstart_ts" },
    duplicate: { type: "string", default: `${EVAL_DIR}/ukbench00120_gray.jpg` },
    expect: { type: "string", default: "ukbench00120" },
    distinct: { type: "string", default: `${EVAL_DIR}/formats_images/baboon.pgm` },
    "timeout-ms": { type: "string", default: "30000" }, // deadline of each CheckDuplicate call
    "stream-timeout-ms": { type: "string", default: "300000" }, // deadline of the whole IndexStream
  },
});
const timeoutMs = Number(flags["timeout-ms"]);
const collection = flags.collection;
let failures = 0;

function expect(ok: boolean, what: string): void {
  console.log(`  ${ok ? "ok  " : "FAIL"}  ${what}`);
  if (!ok) failures += 1;
}

/** A failed call, the way to read one: its status code and message. */
function reportError(call: string, error: unknown): void {
  if (!(error instanceof DedupError)) throw error;
  expect(false, `${call} failed: ${error.code}: ${error.details}`);
}

/** Directories expand (not recursively) into their image files, sorted. */
async function listImages(inputs: string[]): Promise<string[]> {
  const paths: string[] = [];
  for (const input of inputs) {
    if (!(await stat(input)).isDirectory()) {
      paths.push(input);
      continue;
    }
    for (const entry of await readdir(input, { withFileTypes: true })) {
      if (entry.isFile() && IMAGE_EXTENSIONS.has(path.extname(entry.name).toLowerCase())) {
        paths.push(path.join(input, entry.name));
      }
    }
  }
  if (paths.length === 0) throw new Error(`no images in ${inputs.join(", ")}`);
  return paths.sort();
}

const stem = (file: string) => path.basename(file, path.extname(file));

async function indexImages(client: DedupClient, paths: string[]): Promise<void> {
  console.log(`IndexStream: ${paths.length} images into "${collection}"`);
  // Files are read one at a time, as the stream asks for them.
  async function* items(): AsyncGenerator<IndexItem> {
    for (const file of paths) {
      yield { id: stem(file), image: await readFile(file), collection, metadata: { path: file } };
    }
  }
  let indexed = 0;
  try {
    for await (const result of client.index(items(), { timeoutMs: Number(flags["stream-timeout-ms"]) })) {
      if (result.status === IndexResponse_Status.INDEXED) {
        indexed += 1;
      } else {
        console.log(`  ${result.id} ${indexResponse_StatusToJSON(result.status)}: ${result.error}`);
      }
    }
  } catch (error) {
    reportError("IndexStream", error);
    return;
  }
  expect(indexed === paths.length, `${indexed} of ${paths.length} images INDEXED`);
}

/** Expects the best match `expectId`, or no duplicate when `expectId` is undefined. */
async function checkDuplicate(client: DedupClient, file: string, expectId?: string): Promise<void> {
  let response;
  try {
    response = await client.check(await readFile(file), { collection, topK: 3, timeoutMs });
  } catch (error) {
    reportError(`CheckDuplicate ${file}`, error);
    return;
  }
  const name = path.basename(file);
  console.log(
    `CheckDuplicate ${name}: is_duplicate=${response.isDuplicate} ` +
      `threshold=${response.threshold.toFixed(3)} model=${response.model}`,
  );
  for (const match of response.matches) {
    console.log(`  match ${match.id} similarity=${match.similarity.toFixed(4)}`);
  }
  if (expectId === undefined) {
    expect(!response.isDuplicate, `no duplicate of ${name}`);
    return;
  }
  const best = response.matches[0]?.id ?? "";
  expect(response.isDuplicate && best === expectId, `duplicate of ${expectId} (best match "${best}")`);
}

/** What a rejected request looks like: INVALID_ARGUMENT and a reason. */
async function checkNotAnImage(client: DedupClient): Promise<void> {
  try {
    await client.check(Buffer.from("this is not an image"), { collection, timeoutMs });
    expect(false, "a non-image is INVALID_ARGUMENT (the call succeeded)");
  } catch (error) {
    if (!(error instanceof DedupError)) throw error;
    console.log(`CheckDuplicate <not an image>: ${error.code}: ${error.details}`);
    expect(error.code === "INVALID_ARGUMENT", "a non-image is INVALID_ARGUMENT");
  }
}

async function main(): Promise<number> {
  const paths = await listImages(positionals.length > 0 ? positionals : [`${EVAL_DIR}/base_images`]);
  const client = new DedupClient(flags.target, { timeoutMs });
  try {
    await indexImages(client, paths);
    await checkDuplicate(client, flags.duplicate, flags.expect);
    await checkDuplicate(client, flags.distinct);
    await checkNotAnImage(client);
  } finally {
    client.close();
  }
  if (failures > 0) {
    console.log(`FAILED: ${failures} check(s)`);
    return 1;
  }
  console.log("OK: every answer was the expected one");
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error("error:", error instanceof Error ? error.message : error);
    process.exitCode = 2;
  },
);
