import { type Cloud, cloudNamed } from '../../clouds.js';
import { HandlerFailure } from '../../failures.js';
import type { Clock } from '../../io/clock.js';
import { HIMDS_ADDRESS, HimdsChallengeFailed } from '../../io/himds.js';
import { describeBody, getWithRetries, type Imds } from '../../io/imds.js';
import type { Log } from '../../io/log.js';
import { z } from '../../io/zod.js';
import { isTokenAnswer, SIGN_IN_APPLICATION } from './identity.js';

/** HIMDS's token endpoint for the sign-in application (the API version of Arc's Linux documentation). */
export const ARC_TOKEN_PATH = `/metadata/identity/oauth2/token?api-version=2019-11-01&resource=${SIGN_IN_APPLICATION}`;
/** HIMDS's instance metadata, whose `compute.azEnvironment` names the cloud (no key needed). */
export const ARC_INSTANCE_PATH = '/metadata/instance?api-version=2019-11-01';

export interface ArcIdentityOptions {
  /** HIMDS, answering its own challenge (himds.ts `answeringChallenge`). */
  himds: Imds;
  clock: Clock;
  log: Log;
  signal?: AbortSignal;
  /**
   * How long HIMDS failing (refused connections, timeouts, 5xx, 429) is retried. HIMDS is a local
   * service: one that does not answer for this long is stopped, or its agent is disconnected.
   */
  budgetMs?: number;
  random?: () => number;
}

/**
 * The identity check of an Azure Arc-enabled server: HIMDS gives a token for the sign-in
 * application (after its key-file challenge; the token is never read, only its presence). Every
 * Arc-enabled server has a system-assigned identity, so there is no "no identity" (22) here: an
 * agent that does not give one (stopped, disconnected, expired, or answering what cannot be
 * used) fails with `arcAgentUnavailable`.
 */
export async function checkArcIdentity(options: ArcIdentityOptions): Promise<string> {
  const { clock, log } = options;
  const started = clock.now().getTime();
  let result: Awaited<ReturnType<typeof getWithRetries>>;
  try {
    result = await getWithRetries(options.himds, ARC_TOKEN_PATH, {
      clock,
      budgetMs: options.budgetMs ?? 30_000,
      timeoutMs: 10_000,
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.random ? { random: options.random } : {}),
      onRetry: (problem, delayMs) =>
        log.warn('HIMDS identity request failed; retrying', { problem, delayMs }),
    });
  } catch (error) {
    if (error instanceof HimdsChallengeFailed) {
      throw new HandlerFailure('arcAgentUnavailable', `${error.message}.`, { cause: error });
    }
    throw error;
  }
  if (!result.ok) {
    const over = Math.round((clock.now().getTime() - started) / 1000);
    throw new HandlerFailure(
      'arcAgentUnavailable',
      `Asking the Connected Machine agent's HIMDS (${HIMDS_ADDRESS}) for the machine's identity failed ${result.attempts === 1 ? 'once' : `${result.attempts} times over ${over} s`}; the last answer: ${result.problem}. The agent is stopped, disconnected or expired.`,
    );
  }
  const { answer } = result;
  if (answer.status === 200 && isTokenAnswer(answer.body)) {
    return `The Azure Arc-enabled server's system-assigned identity is present (HIMDS at ${HIMDS_ADDRESS} gave a token for the sign-in application after ${result.attempts} request${result.attempts === 1 ? '' : 's'}).`;
  }
  throw new HandlerFailure(
    'arcAgentUnavailable',
    answer.status === 200
      ? `HIMDS (${HIMDS_ADDRESS}) answered the identity request with 200 but no token.`
      : `HIMDS (${HIMDS_ADDRESS}) answered the identity request with HTTP ${answer.status}${describeBody(answer.body)}.`,
  );
}

const instanceSchema = z.object({ compute: z.looseObject({ azEnvironment: z.string() }) });

/**
 * The cloud HIMDS names (`compute.azEnvironment` of its instance metadata, compared without
 * regard to case); `undefined` when HIMDS does not say or names a cloud not in the table.
 */
export async function readArcCloud(
  himds: Imds,
  options: { clock: Clock; signal?: AbortSignal },
): Promise<Cloud | undefined> {
  const result = await getWithRetries(himds, ARC_INSTANCE_PATH, {
    clock: options.clock,
    budgetMs: 10_000,
    ...(options.signal ? { signal: options.signal } : {}),
  }).catch((error: unknown) => {
    if (error instanceof HimdsChallengeFailed) return undefined;
    throw error;
  });
  if (!result?.ok || result.answer.status !== 200) return undefined;
  try {
    const parsed = instanceSchema.safeParse(JSON.parse(result.answer.body));
    return parsed.success ? cloudNamed(parsed.data.compute.azEnvironment) : undefined;
  } catch {
    return undefined;
  }
}
