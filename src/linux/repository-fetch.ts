import { HandlerFailure } from '../failures.js';
import { errorMessage } from '../io/files.js';
import type { Log } from '../io/log.js';
import { type PublicKey, trustedKeys } from './keys.js';
import type { Machine } from './machine.js';
import type { InstallPlan } from './plan.js';

/**
 * What the repository offers, asked before anything on the VM changes: its signing keys (only
 * those with a trusted fingerprint are kept) and, for RHEL flavours, which folder exists.
 */
export interface FetchJob {
  machine: Machine;
  log: Log;
  signal: AbortSignal;
  /** How long each request may take, retries included. */
  budgetMs(): number;
  /** How long each request may go on being answered 429 (see FetchOptions.throttledBudgetMs). */
  throttledBudgetMs?(): number;
}

/** The budgets of one request, asked when it starts. */
function budgets(job: FetchJob): { budgetMs: number; throttledBudgetMs?: number } {
  return {
    budgetMs: job.budgetMs(),
    ...(job.throttledBudgetMs ? { throttledBudgetMs: job.throttledBudgetMs() } : {}),
  };
}

/**
 * The trusted keys from `<baseUrl>/keys/` (and the fingerprints of those refused): files that are
 * absent are skipped; others must answer.
 */
export async function fetchTrustedKeys(
  job: FetchJob,
  plan: InstallPlan,
): Promise<{ trusted: PublicKey[]; refused: string[] }> {
  const { keys } = plan.repository;
  const found: PublicKey[] = [];
  const refused: string[] = [];
  const answered: string[] = [];
  for (const url of keys.urls) {
    const result = await job.machine.fetchText(url, {
      ...budgets(job),
      signal: job.signal,
      onRetry: (problem, delayMs) => job.log.warn(`Retrying in ${delayMs} ms: ${problem}`),
    });
    if (!result.ok) throw new HandlerFailure('repositoryUnavailable', `${result.problem}.`);
    const { status, body } = result.answer;
    if (status === 404 || status === 403) continue;
    if (status !== 200) {
      throw new HandlerFailure('repositoryUnavailable', `${url} answered HTTP ${status}.`);
    }
    answered.push(url);
    let split: ReturnType<typeof trustedKeys>;
    try {
      split = trustedKeys(body, keys.trustedFingerprints);
    } catch (error) {
      throw new HandlerFailure(
        'repositoryUnavailable',
        `${url} did not answer with an OpenPGP key (${errorMessage(error)}): a proxy or captive portal may be answering instead of the repository.`,
      );
    }
    for (const key of split.trusted) {
      if (!found.some((other) => other.fingerprint === key.fingerprint)) found.push(key);
    }
    refused.push(...split.refused);
    if (split.refused.length > 0) {
      job.log.warn(`Not trusted, not installed: keys ${split.refused.join(', ')} from ${url}`);
    }
  }
  if (answered.length === 0) {
    throw new HandlerFailure(
      'repositoryUnavailable',
      `None of ${keys.urls.join(', ')} exists: the repository has no signing keys where packages.microsoft.com keeps them.`,
    );
  }
  if (found.length === 0) {
    throw new HandlerFailure(
      'untrustedRepositoryKey',
      `${answered.join(' and ')} hold${answered.length === 1 ? 's' : ''} only keys ${refused.join(', ')}, none of which is trusted (trusted: ${keys.trustedFingerprints.join(', ')}).`,
    );
  }
  job.log.info(`Trusted keys: ${found.map((key) => key.fingerprint).join(', ')}`);
  return { trusted: found, refused };
}

/**
 * The repository file to write. Where the plan has alternatives (a RHEL-like flavour, then
 * `rhel`), the first whose folder has repository metadata wins; 403 and 404 mean "no such
 * folder", anything else is a failure.
 */
export async function chooseRepository(
  job: FetchJob,
  plan: InstallPlan,
): Promise<{ url: string; content: string }> {
  const { alternatives } = plan.repository;
  const only = alternatives[0];
  if (alternatives.length === 1 && only) return only;
  for (const alternative of alternatives) {
    const probe = `${alternative.url.replace(/\/?$/, '/')}repodata/repomd.xml`;
    const result = await job.machine.fetchText(probe, {
      ...budgets(job),
      signal: job.signal,
      maxBytes: 4 * 1024 * 1024,
      onRetry: (problem, delayMs) => job.log.warn(`Retrying in ${delayMs} ms: ${problem}`),
    });
    if (!result.ok) throw new HandlerFailure('repositoryUnavailable', `${result.problem}.`);
    const { status } = result.answer;
    if (status === 200) {
      job.log.info(`Repository chosen: ${alternative.url}`);
      return alternative;
    }
    if (status !== 403 && status !== 404) {
      throw new HandlerFailure('repositoryUnavailable', `${probe} answered HTTP ${status}.`);
    }
    job.log.info(`No repository at ${alternative.url} (HTTP ${status}); trying the next one`);
  }
  throw new HandlerFailure(
    'repositoryUnavailable',
    `None of ${alternatives.map((alternative) => alternative.url).join(', ')} has repository metadata (repodata/repomd.xml).`,
  );
}
