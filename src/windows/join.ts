import { clouds, readCloud } from '../clouds.js';
import { type FailureStep, failureKinds, HandlerFailure, toFailure } from '../failures.js';
import { describeBody, getWithRetries } from '../io/imds.js';
import type { Log } from '../io/log.js';
import { z } from '../io/zod.js';
import { CDJ_KEY, PKU2U_KEY, type WindowsPlatform } from './platform.js';

/**
 * The Microsoft Entra join of AADLoginForWindows, in the order the real extension logs it:
 * registry settings, the PKU2U policy, then the join — the tenant from IMDS, the cloud's device
 * registration endpoint reachable, `dsregcmd /AzureSecureVMJoin`, confirmed by `dsregcmd /status`.
 * `leaveEntra` is what uninstall does: `dsregcmd /leave`.
 */
export interface JoinJob {
  platform: WindowsPlatform;
  log: Log;
  signal: AbortSignal;
}

export const IDENTITY_INFO_PATH = '/metadata/identity/info?api-version=2018-02-01';
const IMDS_BUDGET_MS = 60_000;

/** The dsregcmd answers with a documented meaning, by their status code in the catalogue. */
const DOCUMENTED_JOIN_ERRORS = ['joinedOtherwise', 'duplicateHostname'] as const;

/** An exit code as Windows gives it (Node may report 0x801C0044 as 2149318724) as a signed 32-bit number. */
export function signed32(code: number): number {
  return code | 0;
}

/** `dsregcmd /status`: `            AzureAdJoined : YES` lines as a map. */
export function parseDsregStatus(stdout: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of stdout.split(/\r?\n/)) {
    const match = /^\s*([A-Za-z][\w ]*?)\s*:\s*(.*?)\s*$/.exec(line);
    if (match?.[1] && match[2] !== undefined && !fields.has(match[1]))
      fields.set(match[1], match[2]);
  }
  return fields;
}

export async function joinEntra(job: JoinJob): Promise<{ message: string; steps: FailureStep[] }> {
  const { platform, log } = job;
  const steps: FailureStep[] = [];
  const succeed = (name: string, message: string) => {
    steps.push({ name, status: 'success', code: 0, message });
  };
  const fail = (name: string, failure: HandlerFailure): never => {
    steps.push({ name, status: 'error', code: failure.statusCode, message: failure.detail });
    throw failure.with({ steps: [...steps] });
  };

  log.info('Adding Registry Settings.');
  await platform.writeRegistry(CDJ_KEY, 'AzureVmTenantIdEndpoint', {
    type: 'REG_SZ',
    data: 'http://169.254.169.254/metadata/identity/info',
  });
  await platform.writeRegistry(CDJ_KEY, 'AzureVmMsiTokenEndpoint', {
    type: 'REG_SZ',
    data: 'http://169.254.169.254/metadata/identity/oauth2/token',
  });
  succeed('Registry', `${CDJ_KEY} points dsregcmd at IMDS.`);

  log.info('Enabling PKU2U policy.');
  await platform.writeRegistry(PKU2U_KEY, 'AllowOnlineID', { type: 'REG_DWORD', data: 1 });
  succeed('Pku2uPolicy', `${PKU2U_KEY}\\AllowOnlineID is 1: PKU2U may use online identities.`);

  log.info('Starting AAD Join process.');
  let tenant: string;
  try {
    tenant = await readTenant(job);
  } catch (error) {
    return fail('Tenant', toFailure(error));
  }
  succeed('Tenant', `The VM's tenant is ${tenant}.`);

  const cloud =
    (await readCloud(platform.imds, { clock: platform.clock, signal: job.signal })) ?? clouds[0];
  const endpoint = `https://${cloud?.deviceRegistration ?? 'enterpriseregistration.windows.net'}/`;
  const reachable = await platform.reachable(endpoint, job.signal);
  if (!reachable.ok) {
    fail(
      'DeviceRegistration',
      new HandlerFailure(
        'deviceRegistrationUnreachable',
        `${endpoint} (${cloud?.name ?? 'AzurePublicCloud'}) cannot be reached: ${reachable.problem}.`,
      ),
    );
  }
  succeed('DeviceRegistration', `${endpoint} answers.`);

  const before = parseDsregStatus((await platform.dsregcmd(['/status'], job.signal)).stdout);
  if (before.get('AzureAdJoined') === 'YES' && sameTenant(before.get('TenantId'), tenant)) {
    const message = `The VM is already joined to Microsoft Entra ID (tenant ${tenant}); it is not joined again.`;
    log.info(message);
    succeed('Join', message);
    return { message, steps };
  }

  log.info('Joining with dsregcmd /AzureSecureVMJoin');
  const joined = await platform.dsregcmd(['/AzureSecureVMJoin'], job.signal);
  const code = signed32(joined.exitCode);
  if (code !== 0) {
    const output = lastLine(joined.stdout || joined.stderr);
    const documented = DOCUMENTED_JOIN_ERRORS.find(
      (kind) => failureKinds[kind].statusCode === code,
    );
    const failure = documented
      ? new HandlerFailure(documented, `dsregcmd /AzureSecureVMJoin answered ${code}: ${output}`)
      : new HandlerFailure(
          'entraJoinFailed',
          `dsregcmd /AzureSecureVMJoin failed with ${code} (0x${(code >>> 0).toString(16).toUpperCase()}): ${output}`,
          { statusCode: code },
        );
    fail('Join', failure);
  }
  const after = parseDsregStatus((await platform.dsregcmd(['/status'], job.signal)).stdout);
  if (after.get('AzureAdJoined') !== 'YES') {
    fail(
      'Join',
      new HandlerFailure(
        'entraJoinFailed',
        `dsregcmd /AzureSecureVMJoin exited 0, but dsregcmd /status says AzureAdJoined : ${after.get('AzureAdJoined') ?? '(missing)'}.`,
      ),
    );
  }
  log.info('Successfully joined machine to AAD.');
  const message = `Joined to Microsoft Entra ID (tenant ${tenant}).`;
  succeed('Join', message);
  return { message, steps };
}

/** `uninstall`: leave the tenant, when the VM is joined. */
export async function leaveEntra(job: JoinJob): Promise<string> {
  const status = parseDsregStatus((await job.platform.dsregcmd(['/status'], job.signal)).stdout);
  if (status.get('AzureAdJoined') !== 'YES') {
    job.log.info('The VM is not joined to Microsoft Entra ID: nothing to leave.');
    return 'the VM was not joined to Microsoft Entra ID; nothing to leave.';
  }
  job.log.info('Leaving Microsoft Entra ID with dsregcmd /leave');
  const left = await job.platform.dsregcmd(['/leave'], job.signal);
  const code = signed32(left.exitCode);
  if (code !== 0) {
    throw new HandlerFailure(
      'entraJoinFailed',
      `dsregcmd /leave failed with ${code}: ${lastLine(left.stdout || left.stderr)}`,
      { statusCode: code },
    );
  }
  job.log.info('Left Microsoft Entra ID.');
  return `left Microsoft Entra ID (tenant ${status.get('TenantId') ?? 'unknown'}).`;
}

const identityInfoSchema = z.object({ tenantId: z.string().min(1) });

async function readTenant(job: JoinJob): Promise<string> {
  const result = await getWithRetries(job.platform.imds, IDENTITY_INFO_PATH, {
    clock: job.platform.clock,
    budgetMs: IMDS_BUDGET_MS,
    signal: job.signal,
    onRetry: (problem, delayMs) =>
      job.log.warn('IMDS identity/info request failed; retrying', { problem, delayMs }),
  });
  if (!result.ok) {
    throw new HandlerFailure(
      'imdsUnreachable',
      `Asking IMDS for the tenant failed: ${result.problem}.`,
    );
  }
  const { status, body } = result.answer;
  if (status === 200) {
    try {
      const parsed = identityInfoSchema.safeParse(JSON.parse(body));
      if (parsed.success) return parsed.data.tenantId;
    } catch {
      // reported below
    }
  }
  throw new HandlerFailure(
    'entraTenantUnavailable',
    `IMDS ${IDENTITY_INFO_PATH} answered HTTP ${status}${describeBody(body)} instead of a tenant.`,
  );
}

function sameTenant(a: string | undefined, b: string): boolean {
  return a !== undefined && a.toLowerCase() === b.toLowerCase();
}

function lastLine(text: string): string {
  const lines = text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter(Boolean);
  return lines.at(-1) ?? '(no output)';
}
