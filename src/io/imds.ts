import type { Clock } from './clock.js';
import { errorMessage } from './files.js';

/**
 * The Azure Instance Metadata Service, always reached directly: `169.254.169.254` must never go
 * through a proxy (Microsoft: "IMDS is not intended to be used behind a proxy"). `node:http` is
 * used on purpose, not undici or fetch: Node's `http` never reads `http_proxy`, and in the
 * Bun-compiled executable undici's dispatcher and `fetch` are routed through the environment's
 * proxy whatever they are told, while `node:http` connects directly.
 */
export const IMDS_HOST = '169.254.169.254';

export interface ImdsAnswer {
  status: number;
  body: string;
  /** `Retry-After` in milliseconds, when IMDS sent one. */
  retryAfterMs: number | undefined;
  /** `WWW-Authenticate`, when sent: the challenge of Azure Arc's HIMDS (himds.ts). */
  wwwAuthenticate?: string | undefined;
}

/** One request, no retries. Network failures and timeouts throw `ImdsUnreachable`. */
export interface Imds {
  get(
    pathAndQuery: string,
    options: {
      timeoutMs: number;
      signal?: AbortSignal;
      /** More request headers (HIMDS: the answer to its challenge). */
      headers?: Readonly<Record<string, string>>;
    },
  ): Promise<ImdsAnswer>;
}

export class ImdsUnreachable extends Error {
  override readonly name = 'ImdsUnreachable';
}

/** No answer from IMDS is ever this large; a larger one is cut off and treated as garbage. */
const MAX_BODY_BYTES = 256 * 1024;

/**
 * A metadata service reached directly with `node:http`: IMDS by default, or Azure Arc's HIMDS on
 * the loopback (himds.ts), which speaks the same protocol.
 */
export function directImds(host = IMDS_HOST, port = 80): Imds {
  return {
    get: (pathAndQuery, { timeoutMs, signal, headers }) =>
      // node:http is loaded on the first request: a converged enable makes none.
      import('node:http').then(
        ({ default: http }) =>
          new Promise<ImdsAnswer>((resolve, reject) => {
            const request = http.request(
              {
                host,
                port,
                path: pathAndQuery,
                method: 'GET',
                agent: false,
                headers: { ...headers, Metadata: 'true', Connection: 'close' },
                ...(signal ? { signal } : {}),
              },
              (response) => {
                const chunks: Buffer[] = [];
                let size = 0;
                response.on('data', (chunk: Buffer) => {
                  size += chunk.length;
                  if (size > MAX_BODY_BYTES) {
                    request.destroy(
                      new ImdsUnreachable(
                        `an answer larger than ${MAX_BODY_BYTES / 1024} KiB (no IMDS answer is that large)`,
                      ),
                    );
                    return;
                  }
                  chunks.push(chunk);
                });
                response.on('end', () => {
                  clearTimeout(timer);
                  resolve({
                    status: response.statusCode ?? 0,
                    body: Buffer.concat(chunks).toString('utf8'),
                    retryAfterMs: parseRetryAfter(response.headers['retry-after']),
                    wwwAuthenticate: firstHeader(response.headers['www-authenticate']),
                  });
                });
                response.on('error', (error) => reject(new ImdsUnreachable(networkProblem(error))));
              },
            );
            const timer = setTimeout(
              () =>
                request.destroy(
                  new ImdsUnreachable(`no answer within ${Math.round(timeoutMs / 1000)} s`),
                ),
              timeoutMs,
            );
            request.on('error', (error) => {
              clearTimeout(timer);
              if (signal?.aborted) reject(signal.reason);
              else
                reject(
                  error instanceof ImdsUnreachable
                    ? error
                    : new ImdsUnreachable(networkProblem(error)),
                );
            });
            request.end();
          }),
      ),
  };
}

/** A network error as a person reads it: an HTTP parser's error means what answered is not HTTP. */
function networkProblem(error: unknown): string {
  const message = errorMessage(error);
  const code = (error as { code?: unknown } | undefined)?.code;
  const notHttp =
    (typeof code === 'string' && code.startsWith('HPE_')) || /^Parse Error\b/i.test(message);
  return notHttp ? `an answer that is not HTTP (${message})` : message;
}

function firstHeader(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function parseRetryAfter(value: string | string[] | undefined): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (!text) return undefined;
  const seconds = Number(text.trim());
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

/** IMDS's transient answers (Microsoft's retry guidance): retry these with backoff. */
export function isTransient(status: number): boolean {
  return status === 404 || status === 410 || status === 429 || status >= 500;
}

export interface RetryOptions {
  clock: Clock;
  /** Stop retrying when this much time has passed since the first attempt. */
  budgetMs: number;
  signal?: AbortSignal;
  /** Per-request timeout. */
  timeoutMs?: number;
  /** Random number in [0, 1), for jitter. */
  random?: () => number;
  onRetry?: (problem: string, delayMs: number) => void;
}

export type RetriedAnswer =
  | { ok: true; answer: ImdsAnswer; attempts: number }
  | { ok: false; problem: string; attempts: number };

const BASE_DELAY_MS = 1000;
const MAX_DELAY_MS = 15_000;

/**
 * Gets `pathAndQuery`, retrying transient answers and network failures with exponential backoff
 * (1 s, 2 s, 4 s … up to 15 s) and full jitter, honouring `Retry-After`, until an answer that is
 * not transient arrives or the budget is spent. IMDS allows 5 requests a second per VM; this
 * stays far below it.
 */
export async function getWithRetries(
  imds: Imds,
  pathAndQuery: string,
  options: RetryOptions,
): Promise<RetriedAnswer> {
  const { clock } = options;
  const random = options.random ?? Math.random;
  const started = clock.now().getTime();
  let attempts = 0;
  for (;;) {
    attempts++;
    const remaining = options.budgetMs - (clock.now().getTime() - started);
    let problem: string;
    let retryAfterMs: number | undefined;
    try {
      const answer = await imds.get(pathAndQuery, {
        timeoutMs: Math.max(1000, Math.min(options.timeoutMs ?? 10_000, remaining)),
        ...(options.signal ? { signal: options.signal } : {}),
      });
      if (!isTransient(answer.status)) return { ok: true, answer, attempts };
      problem = `HTTP ${answer.status}${describeBody(answer.body)}`;
      retryAfterMs = answer.retryAfterMs;
    } catch (error) {
      if (options.signal?.aborted) throw options.signal.reason;
      if (!(error instanceof ImdsUnreachable)) throw error;
      problem = error.message;
    }
    const backoff = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** (attempts - 1));
    const jittered = Math.round(backoff * (0.5 + random() / 2));
    const delay = Math.max(retryAfterMs ?? 0, jittered);
    const elapsed = clock.now().getTime() - started;
    if (elapsed + delay >= options.budgetMs) {
      // A Retry-After that alone runs past the budget ends the retries early: say so, or the
      // handler seems to have given up too soon.
      const askedToWait =
        retryAfterMs !== undefined && retryAfterMs > jittered
          ? `, asking to be asked again after ${Math.ceil(retryAfterMs / 1000)} s (Retry-After), past the ${Math.round(options.budgetMs / 1000)} s allowed`
          : '';
      return { ok: false, problem: `${problem}${askedToWait}`, attempts };
    }
    options.onRetry?.(problem, delay);
    await clock.sleep(delay, options.signal);
  }
}

/** A short, safe description of an error body for messages (never a token: only error fields). */
export function describeBody(body: string): string {
  try {
    const parsed = JSON.parse(body) as { error?: unknown; error_description?: unknown };
    const parts = [parsed.error, parsed.error_description].filter(
      (part) => typeof part === 'string',
    );
    return parts.length ? ` (${parts.join(': ').slice(0, 200)})` : '';
  } catch {
    return '';
  }
}
