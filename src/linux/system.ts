import { promises as fs } from 'node:fs';
import { listFolder, readFileIfExists } from '../io/files.js';
import type { Log } from '../io/log.js';
import type { OperationContext } from '../lifecycle/extension.js';
import { ARC_LOCAL_CONFIG, adoptProxyEnvironment, arcProxy } from './arc-proxy.js';
import type { LinuxSystem } from './checks/index.js';
import { detectMachineKind, type MachineKind } from './machine-kind.js';
import { metadataServiceOf } from './metadata-service.js';

/**
 * The machine the handler runs on: real files, real processes, and its metadata service reached
 * directly: IMDS on an Azure VM, HIMDS on an Azure Arc-enabled server (machine-kind.ts decides,
 * and the log says which). On Arc the proxy the package manager and the repository traffic use
 * is settled here, before anything is fetched (arc-proxy.ts).
 */
export async function realLinuxSystem(
  context: Pick<OperationContext<unknown>, 'processes' | 'clock' | 'libDir' | 'log'>,
): Promise<LinuxSystem> {
  const machine = await detectMachineKind({
    exists: async (file) => (await fs.lstat(file).catch(() => undefined)) !== undefined,
    readText,
    env: process.env,
  });
  context.log.info(`Machine: ${machine.description}`, { evidence: machine.evidence });
  if (machine.kind === 'arc') await adoptArcProxy(context.log);
  return {
    readText,
    listDirectory: listFolder,
    processes: context.processes,
    metadata: metadataServiceOf(machine, { onSecret: (secret) => context.log.addSecret(secret) }),
    clock: context.clock,
    architecture: unameMachine(process.arch),
    agentFolders: [...new Set([context.libDir, '/var/lib/waagent'])],
  };
}

/** Whether the machine is an Azure Arc-enabled server, as the status says it. */
export function machineName(machine: MachineKind): string {
  return machine.kind === 'arc' ? 'the Azure Arc-enabled server' : 'the VM';
}

/** The environment's proxy, else the agent's proxy.url, as this process's proxy (arc-proxy.ts). */
async function adoptArcProxy(log: Log): Promise<void> {
  const proxy = arcProxy(process.env, await readText(ARC_LOCAL_CONFIG));
  adoptProxyEnvironment(process.env, proxy.environment);
  log.info(`Proxy on Azure Arc: ${proxy.source}`, {
    no_proxy: proxy.environment.no_proxy,
    ...(proxy.bypass.length
      ? {
          agentBypass: `${proxy.bypass.join(',')} (service names of the agent's own traffic; not the repository's)`,
        }
      : {}),
  });
}

async function readText(file: string): Promise<string | undefined> {
  return (await readFileIfExists(file))?.toString('utf8');
}

/** Node's architecture names as `uname -m` prints them. */
export function unameMachine(arch: string): string {
  return arch === 'x64' ? 'x86_64' : arch === 'arm64' ? 'aarch64' : arch;
}
