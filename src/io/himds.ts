import { constants, promises as fs } from 'node:fs';
import path from 'node:path';
import { directImds, type Imds, type ImdsAnswer } from './imds.js';

/**
 * Azure Arc's Hybrid Instance Metadata Service (HIMDS), run by the Connected Machine agent on the
 * machine's loopback. It speaks IMDS's protocol (`Metadata: true`), but a request that would give
 * a token is first answered `401` with `WWW-Authenticate: Basic realm=<key file>`: the client
 * proves it may read the agent's token folder by sending that file's content back in
 * `Authorization: Basic <content>`.
 *
 * Always `127.0.0.1:40342`, reached with `node:http` (never through a proxy, see imds.ts): the
 * agent's `IMDS_ENDPOINT` and `IDENTITY_ENDPOINT` variables only confirm that the agent is there
 * (machine-kind.ts). Sending a key to an address a variable names would hand it to whoever set it.
 */
export const HIMDS_HOST = '127.0.0.1';
export const HIMDS_PORT = 40342;
export const HIMDS_ADDRESS = `${HIMDS_HOST}:${HIMDS_PORT}`;

/** The only folder HIMDS's key files may come from. */
export const ARC_TOKENS_FOLDER = '/var/opt/azcmagent/tokens';
/** The largest key file read; the agent's are a few dozen bytes (MSAL and azure-identity use this limit too). */
export const MAX_KEY_BYTES = 4096;

/** HIMDS's challenge could not be answered: the reason names what was wrong, never a key. */
export class HimdsChallengeFailed extends Error {
  override readonly name = 'HimdsChallengeFailed';
}

/**
 * The key file a `WWW-Authenticate` header names (`Basic realm=<path>`, scheme and parameter in
 * any case, the path optionally quoted), or `undefined` when the header names none.
 */
export function challengeRealm(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const match = /^\s*basic\s+realm\s*=\s*(?:"([^"]*)"|([^\s,]+))/i.exec(header);
  const realm = match?.[1] ?? match?.[2];
  return realm?.trim() ? realm.trim() : undefined;
}

/**
 * Reads the key file HIMDS named, only when it is a regular file directly in `tokensFolder`
 * (itself a real folder, not a symbolic link), its name ends in `.key`, it is not a symbolic
 * link, and it holds at most {@link MAX_KEY_BYTES} bytes. The file is opened with `O_NOFOLLOW`
 * and checked again through its descriptor, so a link swapped in after the checks is not
 * followed. Throws `HimdsChallengeFailed` saying which rule the file broke.
 */
export async function readChallengeKey(
  realm: string,
  tokensFolder: string = ARC_TOKENS_FOLDER,
): Promise<string> {
  const refuse = (why: string) =>
    new HimdsChallengeFailed(`HIMDS named the key file "${realm}", which ${why}: it was not read`);
  if (!path.isAbsolute(realm) || path.normalize(realm) !== realm) {
    throw refuse('is not a plain absolute path');
  }
  if (path.dirname(realm) !== tokensFolder) {
    throw refuse(`is not directly in ${tokensFolder}`);
  }
  const name = path.basename(realm);
  if (!name.endsWith('.key') || name === '.key') throw refuse('does not end in .key');
  const folder = await fs.lstat(tokensFolder).catch(() => undefined);
  if (!folder?.isDirectory()) {
    throw refuse(`is in ${tokensFolder}, which is not a real folder`);
  }
  const entry = await fs.lstat(realm).catch(() => undefined);
  if (!entry) throw refuse('does not exist');
  if (entry.isSymbolicLink()) throw refuse('is a symbolic link');
  if (!entry.isFile()) throw refuse('is not a regular file');
  if (entry.size > MAX_KEY_BYTES) throw refuse(`is larger than ${MAX_KEY_BYTES} bytes`);
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(realm, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    throw refuse(code === 'ELOOP' ? 'is a symbolic link' : `cannot be opened (${String(code)})`);
  }
  try {
    const opened = await handle.stat();
    if (!opened.isFile()) throw refuse('is not a regular file');
    const buffer = Buffer.alloc(MAX_KEY_BYTES + 1);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    if (bytesRead > MAX_KEY_BYTES) throw refuse(`is larger than ${MAX_KEY_BYTES} bytes`);
    const key = buffer.subarray(0, bytesRead).toString('utf8');
    // It goes into an HTTP header: nothing that would end the header or is not text.
    if (key === '' || /[^\x20-\x7e]/.test(key)) {
      throw refuse('does not hold a key (empty, or not printable ASCII)');
    }
    return key;
  } finally {
    await handle.close();
  }
}

export interface ChallengeOptions {
  /** Reads the key file named by the challenge (default: {@link readChallengeKey}). */
  readKey?: (realm: string) => Promise<string>;
  /** Called with the key before it is sent: it is a secret for the log and the status. */
  onSecret?: (secret: string) => void;
}

/**
 * HIMDS behind IMDS's interface: each `get` that is answered with the challenge is sent again
 * once with the key file's content, and the second answer is returned. A `401` that names no key
 * file, and a key file that is refused, throw `HimdsChallengeFailed` (not retried: asking again
 * gets the same answer).
 */
export function answeringChallenge(himds: Imds, options: ChallengeOptions = {}): Imds {
  const readKey = options.readKey ?? ((realm: string) => readChallengeKey(realm));
  return {
    async get(pathAndQuery, requestOptions): Promise<ImdsAnswer> {
      const first = await himds.get(pathAndQuery, requestOptions);
      if (first.status !== 401) return first;
      const realm = challengeRealm(first.wwwAuthenticate);
      if (realm === undefined) {
        const header = first.wwwAuthenticate?.slice(0, 200);
        throw new HimdsChallengeFailed(
          `HIMDS answered 401 without naming a key file (${header === undefined ? 'no WWW-Authenticate header' : `WWW-Authenticate: ${JSON.stringify(header)}`}), so its challenge cannot be answered`,
        );
      }
      const key = await readKey(realm);
      options.onSecret?.(key);
      const second = await himds.get(pathAndQuery, {
        ...requestOptions,
        headers: { ...requestOptions.headers, Authorization: `Basic ${key}` },
      });
      if (second.status === 401) {
        throw new HimdsChallengeFailed(
          `HIMDS refused the content of its own key file ${realm} (401 again)`,
        );
      }
      return second;
    },
  };
}

/** The machine's HIMDS, reached directly, answering its challenge with the real token folder. */
export function directHimds(options: Pick<ChallengeOptions, 'onSecret'> = {}): Imds {
  return answeringChallenge(directImds(HIMDS_HOST, HIMDS_PORT), options);
}
