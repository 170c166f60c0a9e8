import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import fc from 'fast-check';
import { failureKinds } from '../../src/failures.js';
import type { CommandResult } from '../../src/lifecycle/pipeline.js';
import { agentStatusFileSchema } from '../../src/protocol/status.js';
import { temporaryFolder } from '../fakes.js';

/**
 * Shared by the bad-input and security tests (test/unit/bad-input-*.test.ts, security.test.ts):
 * a handler folder laid out as the agent lays it out, what "a command ended well" means, and
 * OpenPGP keys made without gpg.
 */

/** fast-check's run count and, to replay a failure it printed, `FC_SEED=<seed>`. */
export function runs(numRuns: number): { numRuns: number; seed?: number } {
  const seed = Number(process.env.FC_SEED);
  return Number.isInteger(seed) && process.env.FC_SEED ? { numRuns, seed } : { numRuns };
}

/** Every exit code a command may end with: success, or a code of the failure catalogue. */
export const CATALOGUE_CODES: ReadonlySet<number> = new Set([
  0,
  ...Object.values(failureKinds).map((kind) => kind.code),
]);

/** A JavaScript stack trace line (`    at f (/x/y.ts:1:2)`, `at node:internal/…`). */
const STACK_LINE = /(^|\n)\s*at [^\n]*(\.[cm]?[jt]s:\d+:\d+|node:internal|<anonymous>)/;

/** A message a person can read: not empty, not a stack trace, not an object's default text. */
export function assertReadable(message: string | undefined, what: string): void {
  assert.ok(message && message.trim().length > 0, `${what}: empty message`);
  assert.doesNotMatch(message, STACK_LINE, `${what}: a stack trace`);
  assert.doesNotMatch(message, /\[object Object\]/, `${what}: an object printed as text`);
}

export interface HandlerLayout {
  /** The agent's Lib.Dir: the handler folder, the state folder and certificates live here. */
  lib: string;
  handlerDir: string;
  config: string;
  status: string;
  log: string;
  events: string;
  /** A valid HandlerEnvironment.json for this layout, as the Linux agent writes it. */
  environment: unknown;
  writeEnvironment(text: string | Uint8Array): Promise<void>;
  writeSettings(seq: number, text: string | Uint8Array): Promise<void>;
  cleanup(): Promise<void>;
}

export const HANDLER_NAME = 'Microsoft.Azure.ActiveDirectory.AADSSHLoginForLinux';

/** `<tmp>/<handler>-1.0.0.0/{config,status}`, logs and events beside it, as the agent makes them. */
export async function handlerLayout(name = HANDLER_NAME): Promise<HandlerLayout> {
  const { dir, cleanup } = await temporaryFolder();
  const handlerDir = path.join(dir, `${name}-1.0.0.0`);
  const config = path.join(handlerDir, 'config');
  const status = path.join(handlerDir, 'status');
  const log = path.join(dir, 'log');
  const events = path.join(dir, 'events');
  await mkdir(config, { recursive: true });
  await mkdir(status, { recursive: true });
  await mkdir(events, { recursive: true });
  const environment = [
    {
      name,
      version: 1.0,
      handlerEnvironment: {
        logFolder: log,
        configFolder: config,
        statusFolder: status,
        heartbeatFile: path.join(handlerDir, 'heartbeat.log'),
        eventsFolder: events,
      },
    },
  ];
  const layout: HandlerLayout = {
    lib: dir,
    handlerDir,
    config,
    status,
    log,
    events,
    environment,
    writeEnvironment: (text) => writeFile(path.join(handlerDir, 'HandlerEnvironment.json'), text),
    writeSettings: (seq, text) => writeFile(path.join(config, `${seq}.settings`), text),
    cleanup,
  };
  await layout.writeEnvironment(JSON.stringify(environment));
  return layout;
}

/** A settings file as the agent writes it. */
export function settingsFile(
  publicSettings: unknown,
  protectedSettings: string | null = null,
  thumbprint: string | null = null,
): string {
  return JSON.stringify({
    runtimeSettings: [
      {
        handlerSettings: {
          publicSettings,
          protectedSettings,
          protectedSettingsCertThumbprint: thumbprint,
        },
      },
    ],
  });
}

/**
 * The claim every command makes whatever its input: it returned (no throw), with an exit code of
 * the catalogue, and left `<statusFolder>/<seq>.status` that the agent's rules accept, terminal,
 * agreeing with the exit code, with a readable message (and readable substatus messages).
 */
export async function assertEndedWell(
  result: CommandResult,
  statusFolder: string,
  seq: number,
): Promise<{ status: string; code: number | undefined; message: string }> {
  assert.ok(CATALOGUE_CODES.has(result.exitCode), `exit code ${result.exitCode} is not catalogued`);
  assertReadable(result.message, 'the command output');
  const text = await readFile(path.join(statusFolder, `${seq}.status`), 'utf8');
  const parsed = agentStatusFileSchema.safeParse(JSON.parse(text));
  assert.ok(parsed.success, `the agent would reject ${text}`);
  const status = parsed.data[0]?.status;
  assert.ok(status);
  assert.notEqual(status.status, 'transitioning', 'left transitioning');
  assert.equal(
    status.status === 'error',
    result.exitCode !== 0,
    `status ${status.status} with exit code ${result.exitCode}`,
  );
  assert.ok(Number.isInteger(status.code));
  const message = status.formattedMessage?.message;
  assertReadable(message, 'the status message');
  for (const entry of status.substatus ?? []) {
    assertReadable(entry?.formattedMessage?.message, `substatus ${entry?.name}`);
  }
  if (result.exitCode !== 0) {
    // A failure ends with what to do about it.
    const kind = Object.values(failureKinds).find((entry) => entry.code === result.exitCode);
    assert.ok(kind);
    assert.ok(
      message?.endsWith(kind.remedy),
      `the status message does not end with the remedy: ${message}`,
    );
  }
  return { status: status.status, code: status.code, message: message ?? '' };
}

// ---------------------------------------------------------------------------------------------
// OpenPGP keys without gpg: what our parser reads is the packet structure and the v4 key body.
// ---------------------------------------------------------------------------------------------

/** One OpenPGP packet in the new format (RFC 4880 §4.2.2) or the old one (§4.2.1). */
export function packet(tag: number, body: Uint8Array, oldFormat = false): Buffer {
  const length = body.length;
  let header: number[];
  if (oldFormat && tag < 16) {
    if (length < 256) header = [0x80 | (tag << 2), length];
    else if (length < 65536) header = [0x80 | (tag << 2) | 1, length >> 8, length & 0xff];
    else header = [0x80 | (tag << 2) | 2, ...u32(length)];
  } else if (length < 192) header = [0xc0 | tag, length];
  else if (length < 8384) header = [0xc0 | tag, ((length - 192) >> 8) + 192, (length - 192) & 0xff];
  else header = [0xc0 | tag, 255, ...u32(length)];
  return Buffer.concat([Buffer.from(header), body]);
}

function u32(value: number): number[] {
  return [(value >>> 24) & 0xff, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff];
}

/** A transferable public key: a v4 key packet, a user id, a signature, maybe a subkey. */
export function syntheticKey(
  material: Uint8Array,
  options: { oldFormat?: boolean; subkey?: boolean } = {},
): { fingerprint: string; packets: Buffer } {
  const body = Buffer.concat([Buffer.from([4, 0x65, 0x00, 0x00, 0x00, 22]), material]);
  const fingerprint = createHash('sha1')
    .update(Buffer.from([0x99, (body.length >> 8) & 0xff, body.length & 0xff]))
    .update(body)
    .digest('hex')
    .toUpperCase();
  const parts = [
    packet(6, body, options.oldFormat),
    packet(13, Buffer.from('Test Signer <signer@example.test>'), options.oldFormat),
    packet(2, Buffer.concat([Buffer.from([4, 0x13]), material.subarray(0, 8)]), options.oldFormat),
  ];
  if (options.subkey) {
    parts.push(
      packet(14, Buffer.concat([Buffer.from([4, 1, 2, 3, 4, 18]), material]), options.oldFormat),
    );
  }
  return { fingerprint, packets: Buffer.concat(parts) };
}

/** Key material: enough bytes that two generated keys never share a fingerprint by accident. */
export const keyMaterial = fc.uint8Array({ minLength: 32, maxLength: 300 });
