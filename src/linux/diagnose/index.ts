import { promises as fs } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { systemClock } from '../../io/clock.js';
import { errorMessage } from '../../io/files.js';
import { directHimds } from '../../io/himds.js';
import { directImds } from '../../io/imds.js';
import { systemProcesses } from '../../io/processes.js';
import type { DiagnoseRequest } from '../../lifecycle/extension.js';
import { readHandlerEnvironment } from '../../protocol/handler-environment.js';
import { readSettings } from '../../protocol/settings.js';
import { realMachine } from '../machine.js';
import { detectMachineKind } from '../machine-kind.js';
import { DEFAULT_BASE_URL } from '../repository.js';
import { parseLinuxSettings } from '../settings.js';
import { unameMachine } from '../system.js';
import {
  cloudInitItem,
  type DiagnoseHost,
  diskItems,
  fipsItem,
  himdsItems,
  imdsItems,
  legacyItem,
  lockItem,
  machineKindItem,
  memoryItem,
  noexecItem,
  operatingSystemItems,
  packageItems,
  proxyItem,
  reachabilityItems,
  selinuxItem,
} from './items.js';
import { findAgentProxy, reachHttpsPort } from './proxy.js';
import { buildReport, type Item, renderText } from './report.js';

/**
 * `aadsshlogin-handler.sh diagnose [--json]`: what an administrator runs on the VM to see why the
 * extension fails, or would. It only reads: no lock, no status, state or log file, nothing
 * installed or written (its one network question per endpoint has a short timeout, so it ends in
 * seconds). Every item is gathered even when an earlier one is a problem.
 */
export async function diagnose(
  request: DiagnoseRequest,
): Promise<{ exitCode: number; output: string }> {
  const json = request.args.includes('--json');
  const host = realHost(request.handlerDir);
  const read = (file: string) => fs.readFile(file, 'utf8').catch(() => undefined);
  const proxy = await findAgentProxy({
    readText: read,
    listDirectory: (folder) => readdir(folder).catch(() => []),
  });
  const repository = await configuredRepository(request.handlerDir);
  const machine = await detectMachineKind({
    exists: async (file) => (await fs.lstat(file).catch(() => undefined)) !== undefined,
    readText: read,
    env: process.env,
  });
  // On Arc the metadata service is the agent's HIMDS: 169.254.169.254 is never asked there.
  const imds =
    machine.kind === 'arc' ? await himdsItems(directHimds(), TIMEOUT_MS) : await imdsItems(host);
  const items: Item[] = [
    machineKindItem(machine),
    ...(await operatingSystemItems(host)),
    await memoryItem(host),
    ...(await diskItems(host)),
    await noexecItem(host),
    await lockItem(host),
    await cloudInitItem(host),
    ...imds.items,
    proxyItem(proxy),
    ...(await reachabilityItems(host, {
      ...repository,
      cloud: imds.cloud,
      environment: proxy.environment,
    })),
    selinuxItem(await read('/sys/fs/selinux/enforce')),
    fipsItem(await read('/proc/sys/crypto/fips_enabled')),
    await legacyItem(host),
    ...(await packageItems(host)),
  ];
  const report = buildReport({
    handler: request.handlerName,
    version: request.version,
    now: new Date(),
    items,
  });
  return {
    exitCode: report.exitCode,
    output: json ? JSON.stringify(report, null, 2) : renderText(report),
  };
}

const TIMEOUT_MS = 5000;

function realHost(handlerDir: string): DiagnoseHost {
  return {
    machine: realMachine(systemProcesses, systemClock),
    imds: directImds(),
    architecture: unameMachine(process.arch),
    handlerDir,
    statfs: async (folder) => {
      const stats = await fs.statfs(folder).catch(() => undefined);
      return (
        stats && {
          freeBytes: stats.bavail * stats.bsize,
          freeInodes: stats.ffree,
          inodes: stats.files,
        }
      );
    },
    reach: (host, environment) => reachHttpsPort(host, environment, TIMEOUT_MS),
    timeoutMs: TIMEOUT_MS,
  };
}

/**
 * The repository the extension was configured with: `repository.baseUrl` of the newest settings
 * file the agent wrote into the handler's config folder, else packages.microsoft.com.
 */
async function configuredRepository(
  handlerDir: string,
): Promise<{ repository: string; repositorySource: string }> {
  const fallback = (why: string) => ({
    repository: DEFAULT_BASE_URL,
    repositorySource: `the default: ${why}`,
  });
  try {
    const environment = await readHandlerEnvironment(handlerDir, {
      clock: systemClock,
      attempts: 1,
    });
    const numbers = (await readdir(environment.configFolder).catch(() => []))
      .map((entry) => /^(\d+)\.settings$/.exec(entry)?.[1])
      .filter((entry) => entry !== undefined)
      .map(Number);
    if (numbers.length === 0) return fallback('no settings file');
    const newest = Math.max(...numbers);
    const settings = await readSettings(environment.configFolder, newest);
    const baseUrl = parseLinuxSettings(settings.publicSettings).settings.repository.baseUrl;
    return baseUrl
      ? {
          repository: baseUrl,
          repositorySource: `repository.baseUrl of ${path.join(environment.configFolder, `${newest}.settings`)}`,
        }
      : fallback('the settings name no mirror');
  } catch (error) {
    return fallback(errorMessage(error));
  }
}
