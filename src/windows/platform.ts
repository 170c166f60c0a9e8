import type { Clock } from '../io/clock.js';
import { directImds, type Imds } from '../io/imds.js';
import type { Processes, RunResult } from '../io/processes.js';

/**
 * Everything AADLoginForWindows touches on Windows, and nothing more: registry values, dsregcmd,
 * whether an HTTPS endpoint answers, and IMDS. The real implementation runs `reg.exe` and
 * `dsregcmd.exe` with argument arrays (never a shell); tests pass a fake, so the lifecycle runs
 * and is tested on Linux.
 */
export interface WindowsPlatform {
  /** A registry value as `reg.exe query` prints it (REG_DWORD as a decimal string), or undefined. */
  readRegistry(key: string, name: string): Promise<string | undefined>;
  writeRegistry(key: string, name: string, value: RegistryValue): Promise<void>;
  /** `dsregcmd.exe <args>`. */
  dsregcmd(args: readonly string[], signal?: AbortSignal): Promise<RunResult>;
  /** Whether `url` answers HTTP at all (any status); the problem otherwise. */
  reachable(
    url: string,
    signal?: AbortSignal,
  ): Promise<{ ok: true } | { ok: false; problem: string }>;
  imds: Imds;
  clock: Clock;
}

export type RegistryValue = { type: 'REG_SZ'; data: string } | { type: 'REG_DWORD'; data: number };

export const CURRENT_VERSION_KEY = 'HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion';
export const PRODUCT_OPTIONS_KEY = 'HKLM\\SYSTEM\\CurrentControlSet\\Control\\ProductOptions';
/** "Network security: Allow PKU2U authentication requests to this computer to use online identities". */
export const PKU2U_KEY = 'HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa\\pku2u';
/** Where dsregcmd's secure VM join finds IMDS. */
export const CDJ_KEY = 'HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\CDJ';

const SYSTEM32 = `${process.env.SystemRoot ?? 'C:\\Windows'}\\System32`;

/** `    CurrentBuild    REG_SZ    17763` → `17763`; REG_DWORD `0x1` → `1`. */
export function parseRegQuery(stdout: string, name: string): string | undefined {
  for (const line of stdout.split(/\r?\n/)) {
    const match =
      /^\s+(.+?)\s{2,}(REG_\w+)\s{2,}(.*)$/.exec(line) ?? /^\s+(.+?)\s+(REG_\w+)\s*$/.exec(line);
    if (!match || match[1]?.toLowerCase() !== name.toLowerCase()) continue;
    const data = (match[3] ?? '').trim();
    if (match[2] === 'REG_DWORD' || match[2] === 'REG_QWORD')
      return String(Number.parseInt(data, 16));
    return data;
  }
  return undefined;
}

/** The real Windows. */
export function realWindowsPlatform(processes: Processes, clock: Clock): WindowsPlatform {
  const reg = `${SYSTEM32}\\reg.exe`;
  return {
    async readRegistry(key, name) {
      const result = await processes.run(reg, ['query', key, '/v', name]);
      return result.exitCode === 0 ? parseRegQuery(result.stdout, name) : undefined;
    },
    async writeRegistry(key, name, value) {
      const result = await processes.run(reg, [
        'add',
        key,
        '/v',
        name,
        '/t',
        value.type,
        '/d',
        String(value.data),
        '/f',
      ]);
      if (result.exitCode !== 0) {
        throw new Error(
          `reg.exe add ${key} /v ${name} failed (exit ${result.exitCode}): ${result.stderr.trim()}`,
        );
      }
    },
    dsregcmd: (args, signal) =>
      processes.run(`${SYSTEM32}\\dsregcmd.exe`, args, signal ? { signal } : {}),
    async reachable(url, signal) {
      const { fetchText } = await import('../io/http.js');
      const result = await fetchText(url, {
        clock,
        budgetMs: 20_000,
        timeoutMs: 10_000,
        maxBytes: 64 * 1024,
        ...(signal ? { signal } : {}),
      });
      return result.ok ? { ok: true } : { ok: false, problem: result.problem };
    },
    imds: directImds(),
    clock,
  };
}
