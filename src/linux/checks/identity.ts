import { HandlerFailure } from '../../failures.js';
import type { Clock } from '../../io/clock.js';
import { describeBody, getWithRetries, type Imds } from '../../io/imds.js';
import type { Log } from '../../io/log.js';
import { z } from '../../io/zod.js';

/** The "Azure Linux VM Sign-In" application, whose token proves a system-assigned identity. */
export const SIGN_IN_APPLICATION = 'ce6ff14a-7fdc-4685-bbe0-f6afdfcfa8e0';
export const TOKEN_PATH = `/metadata/identity/oauth2/token?api-version=2018-02-01&resource=${SIGN_IN_APPLICATION}`;

export interface IdentityCheckOptions {
  imds: Imds;
  clock: Clock;
  log: Log;
  signal?: AbortSignal;
  /** How long an absent identity is re-checked: one assigned a moment ago takes time to appear. */
  absentWindowMs?: number;
  absentIntervalMs?: number;
  /** How long transient failures (429, 5xx, timeouts, refused connections) are retried in all. */
  unreachableBudgetMs?: number;
  random?: () => number;
}

/**
 * Whether the VM has a system-assigned managed identity: IMDS gives a token for the sign-in
 * application (200; the token itself is thrown away unread), or answers 400 "Identity not found".
 * An absent identity is asked again for about two minutes before failing with code 22; IMDS
 * failing or throttling beyond the budget is code 25. Returns how many requests it took.
 */
export async function checkSystemAssignedIdentity(options: IdentityCheckOptions): Promise<string> {
  const { clock, log } = options;
  const absentWindowMs = options.absentWindowMs ?? 120_000;
  const absentIntervalMs = options.absentIntervalMs ?? 10_000;
  const unreachableBudgetMs = options.unreachableBudgetMs ?? 90_000;
  const started = clock.now().getTime();
  const deadline = started + absentWindowMs + unreachableBudgetMs;
  let absentSince: number | undefined;
  let requests = 0;
  for (;;) {
    const asked = clock.now().getTime();
    const result = await getWithRetries(options.imds, TOKEN_PATH, {
      clock,
      budgetMs: Math.max(1000, Math.min(unreachableBudgetMs, deadline - clock.now().getTime())),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.random ? { random: options.random } : {}),
      onRetry: (problem, delayMs) =>
        log.warn('IMDS identity request failed; retrying', { problem, delayMs }),
    });
    requests += result.attempts;
    if (!result.ok) {
      // Only this run of failures: answers of "Identity not found" before it were not failures.
      const failed =
        result.attempts === 1
          ? 'once'
          : `${result.attempts} times over ${seconds(clock.now().getTime() - asked)}`;
      const absent =
        absentSince === undefined
          ? ''
          : `, after answering "Identity not found" for ${seconds(asked - absentSince)}`;
      throw new HandlerFailure(
        'imdsUnreachable',
        `Asking IMDS for the system-assigned identity failed ${failed}${absent}; the last answer: ${result.problem}.`,
      );
    }
    const { answer } = result;
    if (answer.status === 200) {
      if (!isTokenAnswer(answer.body)) {
        throw new HandlerFailure(
          'imdsUnreachable',
          `IMDS answered the identity request with 200 but no token: ${describeNonToken(answer.body)}.`,
        );
      }
      return `A system-assigned managed identity is present (IMDS gave a token for the sign-in application after ${requests} request${requests === 1 ? '' : 's'}).`;
    }
    if (answer.status === 400 && /identity not found/i.test(answer.body)) {
      const now = clock.now().getTime();
      absentSince ??= now;
      if (now - absentSince + absentIntervalMs > absentWindowMs) {
        throw new HandlerFailure(
          'noSystemAssignedIdentity',
          `IMDS answered "Identity not found" for ${seconds(now - absentSince)}: the VM has no system-assigned managed identity.`,
        );
      }
      log.info('No system-assigned identity yet; asking again', {
        waitedSeconds: Math.round((now - absentSince) / 1000),
      });
      await clock.sleep(absentIntervalMs, options.signal);
      continue;
    }
    throw new HandlerFailure(
      'imdsUnreachable',
      `IMDS answered the identity request with HTTP ${answer.status}${describeBody(answer.body)}.`,
    );
  }
}

/** The part of a token answer we look at: that there is a token (its value is never kept). */
const tokenAnswerSchema = z.object({ access_token: z.string().min(1) });

/** Whether a metadata service's answer holds a token (IMDS's and HIMDS's have the same shape). */
export function isTokenAnswer(body: string): boolean {
  try {
    return tokenAnswerSchema.safeParse(JSON.parse(body)).success;
  } catch {
    return false;
  }
}

/** What a 200 without a token held, for the message: its shape only, never its content. */
function describeNonToken(body: string): string {
  if (body.trim() === '') return 'the answer is empty';
  try {
    JSON.parse(body);
    return 'the answer is JSON without a usable access_token';
  } catch {
    return `the answer (${Buffer.byteLength(body)} bytes) is not JSON`;
  }
}

function seconds(ms: number): string {
  return `${Math.round(ms / 1000)} s`;
}
