import path from 'node:path';
import { type FailureKindName, type FailureStep, HandlerFailure, toFailure } from '../failures.js';
import { errorMessage, writeProblem } from '../io/files.js';
import type { Log } from '../io/log.js';
import type { HandlerState } from '../lifecycle/state.js';
import type { OsRelease } from './checks/os-release.js';
import {
  type Change,
  describeChange,
  failureLines,
  type Installation,
  lastLines,
  readInstallation,
  readJournal,
  recordChanges,
  sha256,
  undoChanges,
} from './journal.js';
import { armor, type PublicKey } from './keys.js';
import { type Machine, runOn } from './machine.js';
import { waitForPackageManager } from './package-lock.js';
import { type Command, type PackageManager, packageManagers } from './package-managers/index.js';
import { rpmKeyName, rpmKeys } from './package-managers/rpm-family.js';
import { packagesToQuery, SELINUX_PACKAGE } from './packages.js';
import { describePlan, type InstallPlan, planInstall } from './plan.js';
import {
  CERT_HANDLER,
  type Problem,
  verifyRegistrations,
  WARNING_CHECKS,
  warningChecks,
} from './registrations.js';
import { WRITTEN_BY } from './repository.js';
import { chooseRepository, fetchTrustedKeys } from './repository-fetch.js';
import type { LinuxSettings } from './settings.js';

/**
 * Steps 5–8 of the Linux lifecycle, after the checks: the repository, the packages, the
 * registrations they make, and warnings about sshd settings. `converge` is what install and
 * enable run: it plans, and applies only what is missing, so a converged VM costs one query of our
 * packages and a few file reads. Every change is journalled before it is made (see journal.ts); a
 * failure undoes this run's changes before it is reported.
 */
export interface InstallJob {
  machine: Machine;
  os: OsRelease;
  /** `uname -m` style. */
  architecture: string;
  settings: LinuxSettings;
  log: Log;
  signal: AbortSignal;
  remainingMs(): number;
  saveState(change: (state: HandlerState) => HandlerState): Promise<HandlerState>;
  /** The handler state as last saved: what a rollback undoes when saving fails (a full disk). */
  currentState(): HandlerState;
  /**
   * What the package database said earlier in this command (`queryPackages`), when it asked for
   * every package the plan needs: then the plan asks nothing again.
   */
  installed?: ReadonlyMap<string, string>;
}

/** What recovering a journal and removing the installation need (no plan). */
export type RemovalJob = Pick<
  InstallJob,
  'machine' | 'log' | 'signal' | 'remainingMs' | 'saveState' | 'currentState'
>;

export interface ConvergeResult {
  installation: Installation;
  steps: FailureStep[];
  /** One sentence for the status message. */
  summary: string;
}

/** The longest wait for another program's package-manager lock. */
const LOCK_WAIT_MAX_MS = 10 * 60_000;
/** Time kept for the package manager's own work after waiting for its lock. */
const WORK_RESERVE_MS = 120_000;
/**
 * Time allowed for each request to the repository (keys, the flavour probe), retries included,
 * unless it is answered 429 (see throttledFetchBudgetMs).
 */
const FETCH_BUDGET_MS = 60_000;

/**
 * How long one request to the repository may take, retries included, when `remainingMs` of the
 * command's deadline are left: a minute at most, never the time kept for the package manager's own
 * work, and never less than 5 s.
 */
export function fetchBudgetMs(remainingMs: number): number {
  return Math.min(FETCH_BUDGET_MS, throttledFetchBudgetMs(remainingMs));
}

/**
 * How long one request may go on being answered 429 (rate limited): as long as the deadline
 * leaves the package manager its time. A scale set behind one NAT address can keep
 * packages.microsoft.com's limit exceeded for minutes; failing after one would fail VMs that a
 * little patience gets through (test/package/faults-mirror.test.ts, the 200-process simulation).
 */
export function throttledFetchBudgetMs(remainingMs: number): number {
  return Math.max(5_000, remainingMs - WORK_RESERVE_MS);
}

/** What the deadline must still hold to run a command the repository rate-limited once more. */
const RERUN_RESERVE_MS = 60_000;

/** The registrations verified after installing, each one substatus entry, in this order. */
const REGISTRATIONS: readonly { what: Problem['what']; step: string; fine: string }[] = [
  {
    what: 'sshd',
    step: 'SshdRegistration',
    fine: `sshd runs ${CERT_HANDLER} as the AuthorizedKeysCommand of Entra ID users.`,
  },
  { what: 'nsswitch', step: 'NssRegistration', fine: '/etc/nsswitch.conf lists aad for passwd.' },
  { what: 'pam', step: 'PamRegistration', fine: 'pam_aad is configured under /etc/pam.d.' },
  {
    what: 'selinux',
    step: 'SelinuxRegistration',
    fine: 'The SELinux module aad_permissions is loaded.',
  },
];

/**
 * The steps of `converge`, in order, each one substatus entry in every status of install and
 * enable (after the checks): the repository's keys (network, nothing changed yet), the package
 * manager's locks, the repository and key files, the refresh, the install, the holds, each
 * registration, then the checks that only warn.
 */
export const CONVERGE_STEPS: readonly string[] = [
  'RepositoryKeys',
  'PackageManager',
  'Repository',
  'Refresh',
  'Install',
  'Hold',
  ...REGISTRATIONS.map((registration) => registration.step),
  ...WARNING_CHECKS,
];

export async function converge(job: InstallJob): Promise<ConvergeResult> {
  const { machine, log } = job;
  const interrupted = readJournal(job.currentState()).length > 0;
  let state = await recoverInterruptedRun(job);
  const steps: FailureStep[] = [];

  // Undoing a killed run changed the package database: what was asked before it is stale.
  const prepared = await prepareRun(
    interrupted ? withoutAnswers(job) : job,
    readInstallation(state),
  );
  const { plan, manager, converged } = prepared;

  if (converged) {
    const done = (name: string, message: string) =>
      steps.push({ name, status: 'success', code: 0, message });
    done('RepositoryKeys', 'Nothing to fetch: the repository is configured.');
    done('PackageManager', 'Not needed: nothing to install.');
    done('Repository', repositoryMessage(plan, prepared.repository, 'already'));
    done('Refresh', 'Nothing to refresh: the packages are installed.');
    done('Install', `Nothing to install: ${installedList(plan)} already installed.`);
    done('Hold', holdMessage(plan, 'already'));
    log.info('Nothing to install: the repository and the packages are in place');
  } else {
    try {
      await apply(job, prepared, steps);
    } catch (error) {
      await rollBack(job, error);
    }
  }

  const selinux = plan.packages.wanted.some((spec) => spec.name === SELINUX_PACKAGE);
  const problems = await verifyRegistrations(machine, { selinux, signal: job.signal });
  for (const { what, step, fine } of REGISTRATIONS) {
    const problem = problems.find((candidate) => candidate.what === what);
    if (problem) {
      steps.push({ name: step, status: 'error', code: 21, message: problem.message });
    } else {
      const message =
        what === 'selinux' && !selinux
          ? `Not needed: no SELinux policy package is installed, so neither is ${SELINUX_PACKAGE}.`
          : fine;
      steps.push({ name: step, status: 'success', code: 0, message });
    }
  }
  if (problems.length > 0) {
    const failure = new HandlerFailure(
      'registrationMissing',
      problems.map((p) => p.message).join(' '),
      {
        steps: [...steps],
      },
    );
    if (converged) throw failure;
    await rollBack(job, failure);
  }
  const warnings: string[] = [];
  for (const check of await warningChecks(machine, prepared.installed)) {
    for (const warning of check.warnings) log.warn(warning);
    if (check.warnings.length > 0) warnings.push(check.name);
    steps.push(
      check.warnings.length > 0
        ? { name: check.name, status: 'warning', code: 0, message: check.warnings.join(' ') }
        : { name: check.name, status: 'success', code: 0, message: check.fine },
    );
  }

  // Success: this run's journal becomes part of the installation record. If that cannot be
  // saved (a full disk), the changes are undone rather than left unrecorded.
  try {
    state = await job.saveState((latest) => ({
      ...latest,
      installed: recordChanges(readInstallation(latest), readJournal(latest), manager.name),
      journal: [],
    }));
  } catch (error) {
    await rollBack(job, error);
  }
  const missing = plan.packages.missing.map((spec) => spec.name);
  const all = installedList(plan);
  const are = plan.packages.wanted.length > 1 ? 'are' : 'is';
  const what = converged
    ? `${all} ${are} installed and registered; nothing needed changing.`
    : missing.length === plan.packages.wanted.length
      ? `${all} ${missing.length > 1 ? 'were' : 'was'} installed and ${are} registered.`
      : missing.length > 0
        ? `${joinNames(missing)} ${missing.length > 1 ? 'were' : 'was'} installed; ${all} ${are} registered.`
        : `the repository configuration was written again; ${all} ${are} installed and registered.`;
  return {
    installation: readInstallation(state),
    steps,
    summary:
      warnings.length > 0
        ? `${what} ${warnings.length} warning${warnings.length > 1 ? 's' : ''}, see the substatus entries ${joinNames(warnings)}.`
        : what,
  };
}

/**
 * Everything a run will do, found out before anything changes: the plan, what of it is already in
 * place, the keys and repository file to write (fetched from the repository) and the
 * package-manager commands in the order they run. `converge` applies it; a dry run prints it.
 */
export interface PreparedRun {
  plan: InstallPlan;
  manager: PackageManager;
  repository: RepositoryState;
  /** Nothing to write and nothing to run. */
  converged: boolean;
  /** What the package query found installed (name → version), the OpenSSH server included. */
  installed: ReadonlyMap<string, string>;
  /** When the repository file is to be written: what goes into it and its key file. */
  write?: {
    repositoryUrl: string;
    repositoryContent: string;
    keys: PublicKey[];
    /** Keys the repository offers that are not trusted, so not written. */
    refusedFingerprints: string[];
    keyContent: Buffer;
  };
  commands: {
    /** rpm families: the keys into the rpm database too (zypper trusts only those). */
    importKeys?: Command;
    refresh?: Command;
    install?: Command;
    holds: { name: string; command: Command }[];
  };
}

/** What preparing a run needs: the install job without the state it would change. */
export type PrepareJob = Pick<
  InstallJob,
  'machine' | 'os' | 'architecture' | 'settings' | 'log' | 'signal' | 'remainingMs' | 'installed'
>;

/**
 * Plans the run and asks the repository what it offers, reading the VM (its files and package
 * database) and the network only: it changes nothing. A failure names the RepositoryKeys step.
 */
export async function prepareRun(
  job: PrepareJob,
  installation: Installation,
): Promise<PreparedRun> {
  const repositoryFailure = (failure: HandlerFailure): HandlerFailure =>
    failure.with({
      steps: [
        { name: 'RepositoryKeys', status: 'error', code: failure.code, message: failure.detail },
      ],
    });
  const planned = await planFor(job);
  if (!planned) {
    throw repositoryFailure(
      new HandlerFailure(
        'unsupportedOperatingSystem',
        `There is no packages.microsoft.com repository for ${job.os.id} ${job.os.versionId ?? ''}.`,
      ),
    );
  }
  const { plan, manager, installed } = planned;
  for (const line of describePlan(plan)) job.log.info(`Plan: ${line}`);

  const repository = await inspectRepository(job.machine, plan);
  const holdsMissing = plan.packages.holds.filter((name) => !installation.holds?.includes(name));
  const converged =
    (repository === 'foreign' || repository === 'current') &&
    plan.packages.missing.length === 0 &&
    holdsMissing.length === 0;
  const commands: PreparedRun['commands'] = {
    holds: holdsMissing.map((name) => ({ name, command: manager.hold(name) })),
  };
  if (converged) return { plan, manager, repository, converged, installed, commands };

  // Network first, before anything changes: the keys, and which repository folder exists.
  let write: PreparedRun['write'];
  if (repository !== 'foreign' && repository !== 'current') {
    try {
      const fetchJob = {
        ...job,
        budgetMs: () => fetchBudgetMs(job.remainingMs()),
        throttledBudgetMs: () => throttledFetchBudgetMs(job.remainingMs()),
      };
      const keys = await fetchTrustedKeys(fetchJob, plan);
      const file = await chooseRepository(fetchJob, plan);
      write = {
        repositoryUrl: file.url,
        repositoryContent: file.content,
        keys: keys.trusted,
        refusedFingerprints: keys.refused,
        keyContent:
          plan.repository.keys.format === 'keyring'
            ? Buffer.concat(keys.trusted.map((key) => key.packets))
            : Buffer.from(keys.trusted.map((key) => armor(key.packets)).join('')),
      };
      if (plan.repository.keys.format === 'armored') {
        commands.importKeys = rpmKeys.import(plan.repository.keys.file);
      }
    } catch (error) {
      throw repositoryFailure(toFailure(error));
    }
  }
  if (plan.packages.missing.length > 0) {
    // Someone else's rpm repository file may name its repository differently: no refresh of
    // "ours" then; installing reads the metadata it needs.
    if (repository !== 'foreign' || manager.name === 'apt') {
      commands.refresh = manager.refresh(plan.repository.target);
    }
    commands.install = manager.install(plan.packages.wanted, plan.repository.target);
  }
  return { plan, manager, repository, converged, installed, write, commands };
}

/** The plan, and what the package query found installed (name → version). */
async function planFor(
  job: PrepareJob,
): Promise<
  { plan: InstallPlan; manager: PackageManager; installed: ReadonlyMap<string, string> } | undefined
> {
  const probe = planInstall(job.os, job.architecture, job.settings, new Map());
  if (!probe) return undefined;
  const manager = packageManagers[probe.repository.manager];
  const installed =
    job.installed ?? (await queryInstalled(job, manager, packagesToQuery(job.os, manager.name)));
  const plan = planInstall(job.os, job.architecture, job.settings, installed);
  return plan ? { plan, manager, installed } : undefined;
}

function withoutAnswers(job: InstallJob): InstallJob {
  const { installed: _stale, ...rest } = job;
  return rest;
}

/**
 * One query of the package database for `names` and every package the plan needs, through the
 * VM's own package manager: what the AADLoginForLinux check and the plan share, so that a
 * converged enable runs one package-manager process. `undefined` on a distribution without a
 * repository family (the support check refuses those first).
 */
export async function queryPackages(
  job: PrepareJob,
  names: readonly string[],
): Promise<ReadonlyMap<string, string> | undefined> {
  const probe = planInstall(job.os, job.architecture, job.settings, new Map());
  if (!probe) return undefined;
  const manager = packageManagers[probe.repository.manager];
  const all = [...new Set([...packagesToQuery(job.os, manager.name), ...names])];
  return queryInstalled(job, manager, all);
}

async function queryInstalled(
  job: PrepareJob,
  manager: PackageManager,
  names: readonly string[],
): Promise<Map<string, string>> {
  const command = manager.queryInstalled(names);
  const result = await runCommand(job, command);
  if (result.exitCode === 127) {
    throw new HandlerFailure(
      'packageManagerFailed',
      `${command.argv[0]} is not installed, so the installed packages cannot be read: this ${job.os.id} VM has no working ${manager.name}.`,
    );
  }
  return manager.parseInstalled(result.stdout);
}

export type RepositoryState = 'current' | 'stale' | 'absent' | 'foreign';

/** Whether our repository file (and its key file) is there as the plan would write it. */
async function inspectRepository(machine: Machine, plan: InstallPlan): Promise<RepositoryState> {
  const content = (await machine.readFile(plan.repository.target.file))?.toString('utf8');
  if (content === undefined) return 'absent';
  if (!content.startsWith(WRITTEN_BY)) return 'foreign';
  const current = plan.repository.alternatives.some(
    (alternative) => alternative.content === content,
  );
  const keys = await machine.readFile(plan.repository.keys.file);
  return current && keys !== undefined && keys.length > 0 ? 'current' : 'stale';
}

function repositoryMessage(
  plan: InstallPlan,
  state: RepositoryState,
  when: 'already' | 'now',
): string {
  const file = plan.repository.target.file;
  if (state === 'foreign') {
    return `${file} was not written by this extension; it is used as it is and never changed.`;
  }
  return when === 'already'
    ? `${file} is configured (keys in ${plan.repository.keys.file}).`
    : `${file} written; keys ${plan.repository.keys.trustedFingerprints.length > 0 ? 'verified by fingerprint' : ''} in ${plan.repository.keys.file}.`;
}

function holdMessage(plan: InstallPlan, when: 'already' | 'now'): string {
  const { holds } = plan.packages;
  if (holds.length === 0) return 'Nothing to hold: the newest version is wanted.';
  const version = plan.packages.wanted[0]?.version;
  return when === 'already'
    ? `${joinNames(holds)} already held at ${version}.`
    : `${joinNames(holds)} held at ${version}.`;
}

export function installedList(plan: InstallPlan): string {
  return plan.packages.wanted
    .map((spec) => (spec.version ? `${spec.name} ${spec.version}` : spec.name))
    .join(' and ');
}

/** Makes the changes the prepared run lists, journalling each one first. */
async function apply(job: InstallJob, prepared: PreparedRun, steps: FailureStep[]): Promise<void> {
  const { log } = job;
  const { plan, manager, write, commands } = prepared;
  const step = (name: string, message: string) => {
    steps.push({ name, status: 'success', code: 0, message });
    log.info(`${name}: ${message}`);
  };
  const failStep = (name: string, failure: HandlerFailure): never => {
    steps.push({ name, status: 'error', code: failure.code, message: failure.detail });
    throw failure.with({ steps: [...steps] });
  };

  step(
    'RepositoryKeys',
    write
      ? `Trusted keys ${write.keys.map((key) => key.fingerprint).join(', ')} fetched; packages from ${write.repositoryUrl}.`
      : 'Nothing to fetch: the repository is configured.',
  );

  try {
    await waitForLocks(job, manager);
    const finished = plan.packages.missing.length > 0 && (await finishInterruptedRun(job, manager));
    step(
      'PackageManager',
      finished
        ? `Free; it had been interrupted halfway, and "${manager.interrupted?.finish.argv.join(' ')}" finished that.`
        : 'Free: no other program holds its locks.',
    );
  } catch (error) {
    failStep('PackageManager', toFailure(error));
  }

  try {
    if (write) {
      await writeJournalled(job, plan.repository.keys.file, write.keyContent);
      if (commands.importKeys) await importRpmKeys(job, plan, write.keys, commands.importKeys);
      await writeJournalled(job, plan.repository.target.file, write.repositoryContent);
      step(
        'Repository',
        `${plan.repository.target.file} points at ${write.repositoryUrl}; trusted keys ${write.keys.map((key) => key.fingerprint).join(', ')} in ${plan.repository.keys.file}.`,
      );
    } else {
      step('Repository', repositoryMessage(plan, prepared.repository, 'already'));
    }
  } catch (error) {
    failStep('Repository', toFailure(error));
  }

  const { refresh, install } = commands;
  if (!install) {
    step('Refresh', 'Nothing to refresh: the packages are installed.');
    step('Install', `Nothing to install: ${installedList(plan)} already installed.`);
  } else {
    try {
      if (refresh) {
        const refreshed = await runDownloading(job, manager, refresh);
        if (refreshed.exitCode !== 0) {
          throw commandFailure('repositoryUnavailable', manager, refresh, refreshed);
        }
        step('Refresh', `Ran "${refresh.argv.join(' ')}".`);
      } else {
        step(
          'Refresh',
          `Not needed: ${plan.repository.target.file} is someone else's; installing reads the metadata it needs.`,
        );
      }
    } catch (error) {
      failStep('Refresh', toFailure(error));
    }
    try {
      const before = await queryInstalled(
        job,
        manager,
        plan.packages.missing.map((spec) => spec.name),
      );
      const newNames = plan.packages.wanted
        .map((spec) => spec.name)
        .filter((name) => !before.has(name));
      if (newNames.length > 0) {
        await note(job, { kind: 'packages', manager: manager.name, names: newNames });
      }
      const installed = await runDownloading(job, manager, install);
      if (installed.exitCode !== 0) {
        throw commandFailure('packageManagerFailed', manager, install, installed);
      }
      step('Install', `${installedList(plan)} installed with ${manager.name}.`);
    } catch (error) {
      failStep('Install', toFailure(error));
    }
  }

  try {
    for (const { name, command } of commands.holds) {
      await note(job, { kind: 'hold', manager: manager.name, name });
      const held = await runCommand(job, command);
      if (held.exitCode !== 0) {
        throw commandFailure('packageManagerFailed', manager, command, held);
      }
    }
    step('Hold', holdMessage(plan, commands.holds.length > 0 ? 'now' : 'already'));
  } catch (error) {
    failStep('Hold', toFailure(error));
  }
}

/**
 * Undoes this run's journal, then throws `error` (saying what could not be undone, if anything).
 * The journal is the one last saved, so a state that can no longer be saved (a full disk, perhaps
 * the very failure being rolled back) does not stop the undoing; the next command then finds the
 * journal again and undoes nothing twice (files and packages are checked first).
 */
async function rollBack(job: InstallJob, error: unknown): Promise<never> {
  const failure = toFailure(error);
  const journal = readJournal(job.currentState());
  if (journal.length === 0) throw failure;
  job.log.warn(`Undoing this run's changes: ${journal.map(describeChange).join('; ')}`);
  const left = await undoChanges(journal, {
    machine: job.machine,
    log: job.log,
    signal: job.signal,
  });
  await job
    .saveState((latest) => ({ ...latest, journal: left }))
    .catch((saveError: unknown) => {
      job.log.warn(`The undone journal is not saved: ${errorMessage(saveError)}`);
    });
  const undone =
    left.length === 0
      ? ' The VM was returned to how it was before this run.'
      : ` Could not undo ${left.map(describeChange).join('; ')}: the next command retries.`;
  throw failure.with({ detail: `${failure.detail}${undone}` });
}

/** A run killed halfway left its journal: undo it before anything else. */
async function recoverInterruptedRun(job: RemovalJob): Promise<HandlerState> {
  const state = await job.saveState((latest) => latest);
  const journal = readJournal(state);
  if (journal.length === 0) return state;
  job.log.warn(
    `An earlier command stopped halfway; undoing its changes: ${journal.map(describeChange).join('; ')}`,
  );
  await waitForLocks(job, packageManagers[journalManager(journal) ?? 'apt']);
  const left = await undoChanges(journal, {
    machine: job.machine,
    log: job.log,
    signal: job.signal,
  });
  return job.saveState((latest) => ({ ...latest, journal: left }));
}

function journalManager(journal: readonly Change[]) {
  for (const change of journal) {
    if (change.kind === 'packages' || change.kind === 'hold') return change.manager;
  }
  return undefined;
}

async function note(job: InstallJob, change: Change): Promise<void> {
  await job.saveState((latest) => ({ ...latest, journal: [...latest.journal, change] }));
}

/** Writes one of our files, journalled; an unchanged file is not touched. */
async function writeJournalled(
  job: InstallJob,
  file: string,
  content: string | Buffer,
): Promise<void> {
  const bytes = typeof content === 'string' ? Buffer.from(content) : content;
  const previous = await job.machine.readFile(file);
  if (previous?.equals(bytes)) return;
  await note(job, {
    kind: 'file',
    path: file,
    written: sha256(bytes),
    previous: previous === undefined ? null : previous.toString('base64'),
  });
  try {
    await job.machine.writeFile(file, bytes, 0o644);
  } catch (error) {
    throw new HandlerFailure(
      'packageManagerFailed',
      `Cannot write ${file}: ${writeProblem(error, path.dirname(file))}.`,
      { cause: error },
    );
  }
}

/** rpm families: the keys into the rpm database too (zypper trusts only those); journalled. */
async function importRpmKeys(
  job: InstallJob,
  plan: InstallPlan,
  keys: readonly PublicKey[],
  command: Command,
) {
  for (const key of keys) {
    const name = rpmKeyName(key.fingerprint);
    if ((await runCommand(job, rpmKeys.query(name))).exitCode === 0) continue;
    await note(job, { kind: 'rpmKey', name });
  }
  const result = await runCommand(job, command);
  if (result.exitCode !== 0) {
    throw commandFailure(
      'packageManagerFailed',
      packageManagers[plan.repository.manager],
      command,
      result,
    );
  }
}

/**
 * A package-manager run killed halfway (ours, by the agent's timeout, or anyone's) blocks every
 * later one: apt refuses with "dpkg was interrupted, you must manually run 'dpkg --configure -a'".
 * Finishing it is what apt asks for, and what the install that follows needs. Before anything of
 * this run is changed, so a failure leaves nothing to undo. Returns whether there was one.
 */
async function finishInterruptedRun(job: InstallJob, manager: PackageManager): Promise<boolean> {
  const command = await interruptedRunCommand(job.machine, manager);
  if (!command) return false;
  job.log.warn(
    `The package manager was interrupted halfway (${manager.interrupted?.journalFolder} holds its journal); finishing that first: ${command.argv.join(' ')}`,
  );
  const result = await runCommand(job, command);
  if (result.exitCode !== 0) {
    throw new HandlerFailure(
      'packageManagerFailed',
      `The package manager was interrupted halfway earlier, and "${command.argv.join(' ')}", which finishes that, failed (exit ${result.exitCode}): ${failureLines(result.stderr || result.stdout)}`,
    );
  }
  return true;
}

/** The command that finishes a package-manager run killed halfway, when its journal is there. */
export async function interruptedRunCommand(
  machine: Machine,
  manager: PackageManager,
): Promise<Command | undefined> {
  const { interrupted } = manager;
  if (!interrupted) return undefined;
  const entries = await machine.listDirectory(interrupted.journalFolder);
  return entries.some((name) => interrupted.isJournal(name)) ? interrupted.finish : undefined;
}

async function waitForLocks(job: RemovalJob, manager: PackageManager): Promise<void> {
  await waitForPackageManager({
    lockFiles: manager.lockFiles,
    probe: job.machine.lockProbe,
    clock: job.machine.clock,
    log: job.log,
    budgetMs: Math.max(0, Math.min(LOCK_WAIT_MAX_MS, job.remainingMs() - WORK_RESERVE_MS)),
    signal: job.signal,
  });
}

/**
 * Runs a package-manager command that downloads from the repository; when it fails because the
 * repository answered 429, runs it again after a wait (5, 10, 20, 40, 60 s …, each with jitter
 * between half and all of it) while the deadline keeps a minute for the run after. The package
 * managers do not honour Retry-After and give up on a rate limit within seconds (apt after its 5
 * retries, dnf after 4 tries at once, zypper at once); failures other than 429 are theirs to retry.
 */
async function runDownloading(job: InstallJob, manager: PackageManager, command: Command) {
  for (let attempt = 1; ; attempt++) {
    const result = await runCommand(job, command);
    if (result.exitCode === 0 || !manager.throttled(`${result.stdout}\n${result.stderr}`)) {
      return result;
    }
    const backoff = Math.min(60_000, 5_000 * 2 ** (attempt - 1));
    const wait = Math.round(backoff * (0.5 + Math.random() / 2));
    if (job.remainingMs() - wait < RERUN_RESERVE_MS) return result;
    job.log.warn(
      `The repository answered 429 (rate limited) to "${command.argv.join(' ')}"; running it again in ${wait} ms`,
    );
    await job.machine.clock.sleep(wait, job.signal);
  }
}

/** Runs a package-manager command, logging it with its exit code and duration. */
async function runCommand(job: PrepareJob, command: Command) {
  const started = job.machine.clock.now().getTime();
  const result = await runOn(job.machine, command, job.signal);
  const fields = {
    exitCode: result.exitCode,
    durationMs: job.machine.clock.now().getTime() - started,
  };
  if (result.exitCode === 0) job.log.info(`Ran: ${command.argv.join(' ')}`, fields);
  else logFailure(job.log, command, result, fields);
  return result;
}

/** What package managers print when the disk is full or read-only (apt, dpkg, dnf, rpm, zypper). */
const DISK_FULL =
  /no space left on device|disk quota exceeded|\[errno 28\]|enough free (disk )?space|more space needed|needs \S+ (more space )?on the \S+ file ?system/i;
const READ_ONLY = /read-only file ?system/i;

/**
 * A package-manager command that failed, as the failure to report: of `kind`, quoting the
 * command and its last lines; but when its output says the disk is full or read-only, 28 whatever
 * the step, naming the folders to free (the repository or the network is not what to fix then).
 */
function commandFailure(
  kind: FailureKindName,
  manager: PackageManager,
  command: Command,
  result: { exitCode: number; stdout: string; stderr: string },
): HandlerFailure {
  const failed = `"${command.argv.join(' ')}" failed (exit ${result.exitCode})`;
  const lines = `${result.stderr}\n${result.stdout}`.split('\n');
  const full = lines.filter((line) => DISK_FULL.test(line));
  const readOnly = lines.filter((line) => READ_ONLY.test(line));
  const folders = joinNames(manager.workFolders);
  if (full.length > 0) {
    return new HandlerFailure(
      'packageManagerFailed',
      `The VM's disk is full: free space (and inodes) on the file systems holding ${folders} (df -h and df -i show which one; ${manager.cleanCommand} empties the package cache). ${failed}: ${lastLines([...new Set(full)].join('\n'), 2, 300)}`,
    );
  }
  if (readOnly.length > 0) {
    return new HandlerFailure(
      'packageManagerFailed',
      `A file system the package manager writes to is read-only: remount the one holding ${folders} read-write (see dmesg for why the kernel made it read-only). ${failed}: ${lastLines([...new Set(readOnly)].join('\n'), 2, 300)}`,
    );
  }
  return new HandlerFailure(kind, `${failed}: ${failureLines(result.stderr || result.stdout)}`);
}

/** "a", "a and b", "a, b and c". */
function joinNames(names: readonly string[]): string {
  return names.length <= 1
    ? (names[0] ?? '')
    : `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
}

function logFailure(
  log: Log,
  command: Command,
  result: { stdout: string; stderr: string },
  fields: { exitCode: number; durationMs: number },
) {
  log.info(`Ran: ${command.argv.join(' ')}`, fields);
  for (const [stream, text] of [
    ['stdout', result.stdout],
    ['stderr', result.stderr],
  ] as const) {
    if (text.trim()) log.info(`${command.argv[0]} ${stream}: ${lastLines(text, 20, 4000)}`);
  }
}

/**
 * `uninstall`: undoes the installation record (holds, then aadsshlogin, then
 * aadsshlogin-selinux, then our repository file and keys), and nothing else. What cannot be
 * removed stays in the record for the next try.
 */
export async function removeInstallation(job: RemovalJob): Promise<string> {
  const state = await recoverInterruptedRun(job);
  const installation = readInstallation(state);
  const changes: Change[] = [
    ...(installation.files ?? []).map(
      (file): Change => ({ kind: 'file', path: file.path, written: file.written, previous: null }),
    ),
    ...(installation.rpmKeys ?? []).map((name): Change => ({ kind: 'rpmKey', name })),
  ];
  const manager = installation.manager;
  if (manager && (installation.packages?.length ?? 0) > 0) {
    changes.push({ kind: 'packages', manager, names: installation.packages ?? [] });
  }
  if (manager) {
    for (const name of installation.holds ?? []) changes.push({ kind: 'hold', manager, name });
  }
  if (changes.length === 0) return 'nothing that this extension installed is on the VM.';
  if (manager) await waitForLocks(job, packageManagers[manager]);
  job.log.info(`Removing: ${changes.map(describeChange).reverse().join('; ')}`);
  const left = await undoChanges(changes, {
    machine: job.machine,
    log: job.log,
    signal: job.signal,
  });
  if (left.length > 0) {
    const remaining = recordChanges({}, left, manager ?? 'apt');
    await job.saveState((latest) => ({
      ...latest,
      installed: { ...latest.installed, ...remaining },
    }));
    throw new HandlerFailure(
      'packageManagerFailed',
      `Could not remove ${left.map(describeChange).join('; ')}; see the handler log. The next uninstall tries again.`,
    );
  }
  return `removed ${describeRemoval(changes)}.`;
}

/** "aadsshlogin, aadsshlogin-selinux, /etc/apt/sources.list.d/microsoft-prod.list, …" */
function describeRemoval(changes: readonly Change[]): string {
  const what = [...changes].reverse().flatMap((change): string[] => {
    if (change.kind === 'packages') return [...change.names].reverse();
    if (change.kind === 'file') return [change.path];
    if (change.kind === 'rpmKey') return [`${change.name} (rpm key)`];
    return [];
  });
  return what.join(', ');
}
