import { errorMessage } from '../io/files.js';
import type { Log } from '../io/log.js';
import { z } from '../io/zod.js';
import type { HandlerState } from '../lifecycle/state.js';
import { type Machine, runOn } from './machine.js';
import { type Command, type ManagerName, packageManagers } from './package-managers/index.js';
import { rpmKeys } from './package-managers/rpm-family.js';

/**
 * What the extension changed on the VM, as data in the handler state. A run records each change
 * in the journal *before* making it; a run that fails undoes its journal in reverse order, and a
 * run that was killed is undone by the next command, which finds the journal still there. A run
 * that succeeds moves its journal into the installation record, which `uninstall` undoes.
 */
const managerName = z.enum(['apt', 'dnf', 'yum', 'tdnf', 'zypper']);

export const changeSchema = z.discriminatedUnion('kind', [
  /**
   * A file we wrote: `written` is the SHA-256 of what we wrote (a file changed since by someone
   * else is left alone), `previous` its earlier content (base64), `null` when it did not exist.
   */
  z.object({
    kind: z.literal('file'),
    path: z.string(),
    written: z.string(),
    previous: z.string().nullable(),
  }),
  /** Packages this run installed that were not installed before, in install order. */
  z.object({ kind: z.literal('packages'), manager: managerName, names: z.array(z.string()) }),
  z.object({ kind: z.literal('hold'), manager: managerName, name: z.string() }),
  /** A key imported into the rpm database (`gpg-pubkey-<id>`) that was not there before. */
  z.object({ kind: z.literal('rpmKey'), name: z.string() }),
]);
export type Change = z.infer<typeof changeSchema>;

/** The installation record: `state.installed`, shared by every version of the handler. */
export const installationSchema = z.looseObject({
  identityConfirmed: z.boolean().optional(),
  cloud: z.string().optional(),
  manager: managerName.optional(),
  /** Files we wrote (the repository file, the key file), with the SHA-256 of what we wrote. */
  files: z.array(z.object({ path: z.string(), written: z.string() })).optional(),
  /** Packages we installed, in install order. */
  packages: z.array(z.string()).optional(),
  holds: z.array(z.string()).optional(),
  rpmKeys: z.array(z.string()).optional(),
});
export type Installation = z.infer<typeof installationSchema>;

export function readInstallation(state: HandlerState): Installation {
  const parsed = installationSchema.safeParse(state.installed);
  return parsed.success ? parsed.data : {};
}

export function readJournal(state: HandlerState): Change[] {
  return state.journal.flatMap((entry) => {
    const parsed = changeSchema.safeParse(entry);
    return parsed.success ? [parsed.data] : [];
  });
}

/** The installation record with `changes` added (a run that succeeded). */
export function recordChanges(
  installation: Installation,
  changes: readonly Change[],
  manager: ManagerName,
): Installation {
  const add = (list: readonly string[] | undefined, more: readonly string[]) => [
    ...new Set([...(list ?? []), ...more]),
  ];
  return {
    ...installation,
    manager,
    files: [
      ...(installation.files ?? []).filter(
        (file) => !changes.some((change) => change.kind === 'file' && change.path === file.path),
      ),
      ...changes.flatMap((change) =>
        change.kind === 'file' ? [{ path: change.path, written: change.written }] : [],
      ),
    ],
    packages: add(
      installation.packages,
      changes.flatMap((change) => (change.kind === 'packages' ? change.names : [])),
    ),
    holds: add(
      installation.holds,
      changes.flatMap((change) => (change.kind === 'hold' ? [change.name] : [])),
    ),
    rpmKeys: add(
      installation.rpmKeys,
      changes.flatMap((change) => (change.kind === 'rpmKey' ? [change.name] : [])),
    ),
  };
}

export interface UndoOptions {
  machine: Machine;
  log: Log;
  signal?: AbortSignal;
}

/**
 * Undoes `changes`, newest first. A change that cannot be undone is logged and returned (it stays
 * in the journal for the next run); the others are gone from the VM when this returns.
 */
export async function undoChanges(
  changes: readonly Change[],
  options: UndoOptions,
): Promise<Change[]> {
  const left: Change[] = [];
  for (const change of [...changes].reverse()) {
    try {
      await undo(change, options);
    } catch (error) {
      options.log.error(`Could not undo ${describeChange(change)}: ${errorMessage(error)}`);
      left.unshift(change);
    }
  }
  return left;
}

export function describeChange(change: Change): string {
  switch (change.kind) {
    case 'file':
      return `${change.previous === null ? 'the new file' : 'the change to'} ${change.path}`;
    case 'packages':
      return `the installation of ${change.names.join(', ')}`;
    case 'hold':
      return `the hold on ${change.name}`;
    case 'rpmKey':
      return `the import of ${change.name} into the rpm database`;
  }
}

async function undo(change: Change, { machine, log, signal }: UndoOptions): Promise<void> {
  const run = (command: Command) => runOn(machine, command, signal);
  const check = (result: { exitCode: number; stderr: string }, what: string) => {
    if (result.exitCode !== 0) {
      throw new Error(`${what} exited ${result.exitCode}: ${lastLines(result.stderr)}`);
    }
  };
  switch (change.kind) {
    case 'file': {
      const now = await machine.readFile(change.path);
      if (now === undefined && change.previous === null) return;
      if (now !== undefined && sha256(now) !== change.written) {
        log.warn(
          `Left alone: ${change.path} was changed by someone else after this extension wrote it`,
        );
        return;
      }
      if (change.previous === null) await machine.removeFile(change.path);
      else await machine.writeFile(change.path, Buffer.from(change.previous, 'base64'), 0o644);
      log.info(`Undone: ${describeChange(change)}`);
      return;
    }
    case 'packages': {
      const manager = packageManagers[change.manager];
      const query = manager.queryInstalled(change.names);
      // Installed, or left halfway by a killed or failed run (dpkg's half-configured, …): both go.
      const present = manager.parsePresent((await run(query)).stdout);
      // Removed in the reverse of install order: aadsshlogin before aadsshlogin-selinux.
      for (const name of [...change.names].reverse()) {
        if (!present.has(name)) continue;
        const command = manager.remove([name]);
        check(await run(command), command.argv.join(' '));
        log.info(`Undone: the installation of ${name}`);
      }
      return;
    }
    case 'hold': {
      const command = packageManagers[change.manager].release(change.name);
      check(await run(command), command.argv.join(' '));
      log.info(`Undone: ${describeChange(change)}`);
      return;
    }
    case 'rpmKey': {
      if ((await run(rpmKeys.query(change.name))).exitCode !== 0) return;
      const command = rpmKeys.remove(change.name);
      check(await run(command), command.argv.join(' '));
      log.info(`Undone: ${describeChange(change)}`);
      return;
    }
  }
}

/** The last lines of a program's output, for a status message (which the agent cuts at 1 KiB). */
export function lastLines(text: string, count = 4, maxChars = 400): string {
  const lines = text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '');
  const tail = lines.slice(-count).join(' | ');
  return tail.length > maxChars ? `…${tail.slice(-maxChars)}` : tail || '(no output)';
}

/**
 * What a failed program said, for a status message: `lastLines` of its error lines where it marks
 * them (apt's `E:`, dnf's `Error:`), else of all its output. apt follows `E: Failed to fetch …
 * File has unexpected size (740 != 1480). Mirror sync in progress?` with the file's hashes, which
 * would otherwise be all the operator sees.
 */
export function failureLines(text: string): string {
  const errors = text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => /^(E|Error):/.test(line));
  return lastLines(errors.length > 0 ? errors.join('\n') : text);
}

export function sha256(content: string | Uint8Array): string {
  // node:crypto is loaded when first needed: a converged enable hashes nothing.
  return process.getBuiltinModule('node:crypto').createHash('sha256').update(content).digest('hex');
}
