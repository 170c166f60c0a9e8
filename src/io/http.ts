import type { Dispatcher } from 'undici';
import type { Clock } from './clock.js';
import { errorMessage } from './files.js';

/**
 * HTTP to the package repository (packages.microsoft.com or a mirror), through the proxy the
 * environment names (`http_proxy`, `https_proxy`, `no_proxy`, either case) — the opposite of
 * IMDS, which `imds.ts` always reaches directly. Transient answers (429, 5xx) and network
 * failures are retried with backoff and jitter, honouring `Retry-After`, within a budget (a longer
 * one for 429, see `throttledBudgetMs`).
 */
export interface HttpAnswer {
  status: number;
  body: string;
}

export interface FetchOptions {
  clock: Clock;
  /** Stop retrying when this much time has passed. */
  budgetMs: number;
  /**
   * Stop retrying answers of 429 only when this much time has passed (default, and at least,
   * `budgetMs`). A repository that answers 429 is there and asks us to wait, and a rate limit can
   * last minutes: packages.microsoft.com counts 4,000 requests per 5 minutes per client address,
   * shared by every VM behind one NAT address.
   */
  throttledBudgetMs?: number;
  timeoutMs?: number;
  maxBytes?: number;
  signal?: AbortSignal;
  random?: () => number;
  onRetry?: (problem: string, delayMs: number) => void;
}

export type FetchResult = { ok: true; answer: HttpAnswer } | { ok: false; problem: string };

let client: { dispatcher: Dispatcher; request: typeof import('undici').request } | undefined;

/** undici, loaded on the first request: a converged enable makes none and never loads it. */
async function httpClient() {
  if (!client) {
    const { EnvHttpProxyAgent, request } = await import('undici');
    client = { dispatcher: new EnvHttpProxyAgent(), request };
  }
  return client;
}

function transient(status: number): boolean {
  return status === 429 || status === 408 || status >= 500;
}

/** GETs `url` as text; answers that are not transient (200, 403, 404 …) are returned as they are. */
export async function fetchText(url: string, options: FetchOptions): Promise<FetchResult> {
  const { dispatcher, request } = await httpClient();
  const { clock } = options;
  const random = options.random ?? Math.random;
  const maxBytes = options.maxBytes ?? 1024 * 1024;
  const started = clock.now().getTime();
  for (let attempt = 1; ; attempt++) {
    let problem: string;
    let retryAfterMs: number | undefined;
    let throttled = false;
    try {
      const response = await request(url, {
        dispatcher,
        method: 'GET',
        headersTimeout: options.timeoutMs ?? 30_000,
        bodyTimeout: options.timeoutMs ?? 30_000,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of response.body) {
        size += (chunk as Buffer).length;
        if (size > maxBytes) {
          response.body.destroy();
          return { ok: false, problem: `${url} answered more than ${maxBytes} bytes` };
        }
        chunks.push(chunk as Buffer);
      }
      const answer = { status: response.statusCode, body: Buffer.concat(chunks).toString('utf8') };
      if (!transient(answer.status)) return { ok: true, answer };
      problem = `${url} answered HTTP ${answer.status}`;
      throttled = answer.status === 429;
      const header = response.headers['retry-after'];
      const seconds = Number(Array.isArray(header) ? header[0] : header);
      retryAfterMs = Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : undefined;
    } catch (error) {
      if (options.signal?.aborted) throw options.signal.reason;
      problem = `${url}: ${errorMessage(error)}`;
    }
    const backoff = Math.min(30_000, 1000 * 2 ** (attempt - 1));
    const delay = Math.max(retryAfterMs ?? 0, Math.round(backoff * (0.5 + random() / 2)));
    const budgetMs = throttled
      ? Math.max(options.budgetMs, options.throttledBudgetMs ?? 0)
      : options.budgetMs;
    if (clock.now().getTime() - started + delay >= budgetMs) return { ok: false, problem };
    options.onRetry?.(problem, delay);
    await clock.sleep(delay, options.signal);
  }
}
