import type { Cloud } from '../../clouds.js';
import { type FailureStep, HandlerFailure, toFailure } from '../../failures.js';
import type { Clock } from '../../io/clock.js';
import type { Log } from '../../io/log.js';
import type { Processes } from '../../io/processes.js';
import type { MetadataService } from '../metadata-service.js';
import { installedLegacyPackages, LEGACY_PACKAGES, legacyHandlerFolders } from './legacy.js';
import { formatKib, MEMINFO_FILE, MINIMUM_MEMTOTAL_KIB, parseMemTotalKib } from './memory.js';
import { OS_RELEASE_FILES, type OsRelease, parseOsRelease } from './os-release.js';
import { supportVerdict } from './support-matrix.js';

/**
 * What the checks read of the machine; the real one reads the real files, processes and metadata
 * service (IMDS on an Azure VM, HIMDS on an Arc-enabled server).
 */
export interface LinuxSystem {
  readText(file: string): Promise<string | undefined>;
  listDirectory(folder: string): Promise<string[]>;
  processes: Processes;
  metadata: MetadataService;
  clock: Clock;
  /** `uname -m` style: `x86_64`, `aarch64`. */
  architecture: string;
  /** The agent's folders to look for AADLoginForLinux handler folders in. */
  agentFolders: readonly string[];
}

export type Step = FailureStep;

/** The checks in the contract's order; each is one substatus entry of the status file. */
export const CHECKS = ['OperatingSystem', 'Memory', 'LegacyExtension', 'ManagedIdentity'] as const;
export type CheckName = (typeof CHECKS)[number];

export interface CheckResults {
  steps: Step[];
  os: OsRelease;
  cloud: Cloud | undefined;
}

/**
 * The four checks, in the contract's order, before anything on the VM changes: operating system
 * (51), memory (24), AADLoginForLinux remnants (23), system-assigned identity (22, or 25 when IMDS
 * cannot tell; 35 on an Arc-enabled server, whose HIMDS is asked instead). Each adds one step (a substatus entry) and one log line with its duration; the
 * first failing one stops the rest and is thrown with the steps so far (the caller, which knows
 * every step of its command, marks the others as not run). `identity: false` skips
 * the only expensive one (a converged `enable`).
 */
export async function runChecks(
  system: LinuxSystem,
  options: {
    log: Log;
    signal?: AbortSignal;
    identity: boolean;
    /**
     * Asks the package database about `names` through the VM's package manager once the
     * distribution is known, and keeps the answer for the plan (installer.ts queryPackages).
     * Without it, the AADLoginForLinux check asks dpkg and rpm itself.
     */
    queryPackages?: (
      os: OsRelease,
      names: readonly string[],
    ) => Promise<ReadonlyMap<string, string> | undefined>;
  },
): Promise<CheckResults> {
  const { log } = options;
  const steps: Step[] = [];
  const step = async <T>(name: CheckName, check: () => Promise<{ message: string; value: T }>) => {
    const started = system.clock.now().getTime();
    try {
      const { message, value } = await check();
      steps.push({ name, status: 'success', code: 0, message });
      log.info(`Check ${name} passed: ${message}`, {
        durationMs: system.clock.now().getTime() - started,
      });
      return value;
    } catch (error) {
      const failure = toFailure(error);
      steps.push({ name, status: 'error', code: failure.code, message: failure.detail });
      log.error(`Check ${name} failed: ${failure.detail}`, {
        code: failure.code,
        durationMs: system.clock.now().getTime() - started,
      });
      throw failure.with({ steps: [...steps] });
    }
  };

  const os = await step('OperatingSystem', async () => {
    const found = await readOsRelease(system);
    const verdict = supportVerdict(found, system.architecture);
    if (!verdict.supported) {
      throw new HandlerFailure('unsupportedOperatingSystem', verdict.reason);
    }
    return {
      message: `${found.prettyName ?? `${found.id} ${found.versionId}`} (${system.architecture}) is supported.`,
      value: found,
    };
  });

  await step('Memory', async () => {
    const memTotal = parseMemTotalKib((await system.readText(MEMINFO_FILE)) ?? '');
    if (memTotal === undefined) {
      throw new HandlerFailure(
        'insufficientMemory',
        `${MEMINFO_FILE} has no MemTotal line: the VM's memory cannot be checked.`,
      );
    }
    if (memTotal < MINIMUM_MEMTOTAL_KIB) {
      throw new HandlerFailure(
        'insufficientMemory',
        `The VM has ${formatKib(memTotal)} of memory (MemTotal ${memTotal} kB); the extension needs a VM with at least 1 GiB allocated (MemTotal of at least ${MINIMUM_MEMTOTAL_KIB} kB).`,
      );
    }
    return { message: `${formatKib(memTotal)} (MemTotal ${memTotal} kB).`, value: memTotal };
  });

  await step('LegacyExtension', async () => {
    const folders: string[] = [];
    for (const folder of system.agentFolders) {
      for (const entry of legacyHandlerFolders(await system.listDirectory(folder))) {
        folders.push(`${folder}/${entry}`);
      }
    }
    const known = await options.queryPackages?.(os, LEGACY_PACKAGES);
    const packages = known
      ? LEGACY_PACKAGES.filter((name) => known.has(name))
      : await installedLegacyPackages(system.processes, options.signal);
    if (packages.length || folders.length) {
      const found = [...packages.map((name) => `package ${name}`), ...folders].join(', ');
      throw new HandlerFailure(
        'legacyExtensionInstalled',
        `AADLoginForLinux is still on the VM: ${found}.`,
      );
    }
    return { message: 'No trace of AADLoginForLinux.', value: undefined };
  });

  if (!options.identity) {
    steps.push({
      name: 'ManagedIdentity',
      status: 'success',
      code: 0,
      message: 'Not asked again: the identity was confirmed when the extension was installed.',
    });
    return { steps, os, cloud: undefined };
  }

  const cloud = await step('ManagedIdentity', async () => {
    const { metadata } = system;
    const present = await metadata.confirmIdentity({
      clock: system.clock,
      log,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    const found = await metadata.readCloud({
      clock: system.clock,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    if (!found)
      log.warn(`The cloud (${metadata.name} azEnvironment) is unknown; assuming AzurePublicCloud`);
    return {
      message: `${present} Cloud: ${found?.name ?? 'unknown, assuming AzurePublicCloud'}.`,
      value: found,
    };
  });
  return { steps, os, cloud };
}

/** /etc/os-release, else /usr/lib/os-release; neither readable is an unsupported system. */
async function readOsRelease(system: LinuxSystem): Promise<OsRelease> {
  for (const file of OS_RELEASE_FILES) {
    const text = await system.readText(file).catch(() => undefined);
    if (text !== undefined) return parseOsRelease(text);
  }
  throw new HandlerFailure(
    'unsupportedOperatingSystem',
    `Neither ${OS_RELEASE_FILES.join(' nor ')} can be read, so the distribution is unknown (architecture ${system.architecture}).`,
  );
}
