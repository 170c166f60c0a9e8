import { promises as fs } from 'node:fs';
import { isNotFound } from '../io/files.js';
import { directImds } from '../io/imds.js';
import type { OperationContext } from '../lifecycle/extension.js';
import type { LinuxSystem } from './checks/index.js';

/** The VM the handler runs on: real files, real processes, IMDS reached directly. */
export function realLinuxSystem(
  context: Pick<OperationContext<unknown>, 'processes' | 'clock' | 'libDir'>,
): LinuxSystem {
  return {
    readText: async (file) => {
      try {
        return await fs.readFile(file, 'utf8');
      } catch (error) {
        if (isNotFound(error)) return undefined;
        throw error;
      }
    },
    listDirectory: (folder) => fs.readdir(folder).catch(() => []),
    processes: context.processes,
    imds: directImds(),
    clock: context.clock,
    architecture: unameMachine(process.arch),
    agentFolders: [...new Set([context.libDir, '/var/lib/waagent'])],
  };
}

/** Node's architecture names as `uname -m` prints them. */
export function unameMachine(arch: string): string {
  return arch === 'x64' ? 'x86_64' : arch === 'arm64' ? 'aarch64' : arch;
}
