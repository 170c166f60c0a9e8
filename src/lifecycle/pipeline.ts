import path from 'node:path';
import { failureKinds, HandlerFailure, toFailure } from '../failures.js';
import type { Clock } from '../io/clock.js';
import { writeProblem } from '../io/files.js';
import { type Log, type LogContext, redact } from '../io/log.js';
import type { Processes } from '../io/processes.js';
import { commandEvents, writeEvents } from '../protocol/events.js';
import {
  type HandlerEnvironment,
  readHandlerEnvironment,
} from '../protocol/handler-environment.js';
import { acquireLock, type HeldLock, type ProcessTable } from '../protocol/lock.js';
import { decryptProtectedSettings, secretValues } from '../protocol/protected-settings.js';
import { resolveSequenceNumber } from '../protocol/sequence.js';
import { readSettings } from '../protocol/settings.js';
import {
  MAX_MESSAGE_CHARS,
  type StatusReport,
  type StatusValue,
  type Substatus,
  statusFilePath,
  writeStatus,
} from '../protocol/status.js';
import type { AgentHints, Extension, OperationContext, Outcome } from './extension.js';
import { operations as defaultOperations, type Operation, type Verb } from './operations.js';
import { fileStateStore, type HandlerState, recordApplied, type StateStore } from './state.js';

export interface PipelineDependencies<Settings> {
  extension: Extension<Settings>;
  /** This handler's four-part version. */
  version: string;
  /** The folder the agent unzipped the handler into (it holds HandlerEnvironment.json). */
  handlerDir: string;
  /** The command's environment (the agent's variables). */
  env: Readonly<Record<string, string | undefined>>;
  clock: Clock;
  processes: Processes;
  createLog(options: { folder: string; fileName: string; context: LogContext }): Log;
  processTable?: ProcessTable;
  /** The operation table; tests pass shorter deadlines. */
  operations?: Readonly<Record<Verb, Operation>>;
  /** Called with problems that cannot go to the log (it is not open yet, or not writable). */
  warn?: (message: string) => void;
}

export interface CommandResult {
  exitCode: number;
  status: StatusValue;
  /** The operator's one-line account; main prints it, and the agent shows it on failure. */
  message: string;
}

/** Time kept back from the deadline to write the status and exit after waiting for the lock. */
const LOCK_RESERVE_MS = 10_000;

/** The folder holding the handler's state and lock: beside the versioned handler folders. */
export function stateFolder(handlerDir: string, handlerName: string): string {
  return path.join(path.dirname(path.resolve(handlerDir)), `${handlerName}.state`);
}

/** The agent's `Lib.Dir`, where it keeps handler folders and the certificates for protected settings. */
export function agentLibDir(
  handlerDir: string,
  env: Readonly<Record<string, string | undefined>>,
): string {
  const fromAgent = env.AZURE_GUEST_AGENT_EXTENSION_PATH?.trim();
  return path.dirname(path.resolve(fromAgent || handlerDir));
}

/**
 * Runs one lifecycle command from start to end: environment → sequence number → lock → settings
 * → `transitioning` status where the operation reports progress → the extension's work, bounded by
 * the deadline → terminal status → handler state → exit code → the agent's events. It never throws
 * and never exits the process: every failure becomes a status file and an exit code from the
 * failure catalogue.
 */
export async function runCommand<Settings>(
  verb: Verb,
  deps: PipelineDependencies<Settings>,
): Promise<CommandResult> {
  const startedAt = deps.clock.now();
  const seen: CommandSeen = {
    eventsFolder: undefined,
    sequenceNumber: 0,
    steps: [],
    log: undefined,
  };
  const result = await runOperation(verb, deps, seen);
  try {
    await sendEvents(verb, deps, seen, { startedAt, result });
  } finally {
    await seen.log?.close();
  }
  return result;
}

/** What the operation's run tells the events written after it, and its log, still open. */
interface CommandSeen {
  /** From HandlerEnvironment.json; absent when the agent collects no events. */
  eventsFolder: string | undefined;
  sequenceNumber: number;
  /** The steps of the terminal status (substatus), redacted. */
  steps: readonly Substatus[];
  log: Log | undefined;
}

/**
 * The command's events (its start, each step's result, its end with duration and exit code) into
 * the agent's events folder. Never fails the command: a problem is logged and the events dropped.
 */
async function sendEvents<Settings>(
  verb: Verb,
  deps: PipelineDependencies<Settings>,
  seen: CommandSeen,
  { startedAt, result }: { startedAt: Date; result: CommandResult },
): Promise<void> {
  if (!seen.eventsFolder) return;
  const endedAt = deps.clock.now();
  const events = commandEvents({
    task: (deps.operations ?? defaultOperations)[verb].title,
    version: deps.version,
    sequenceNumber: seen.sequenceNumber,
    startedAt,
    endedAt,
    status: result.status,
    exitCode: result.exitCode,
    message: result.message,
    steps: seen.steps,
  });
  try {
    const written = await writeEvents(seen.eventsFolder, events, endedAt);
    if ('skipped' in written) seen.log?.warn(`No events written: ${written.skipped}`);
  } catch (error) {
    seen.log?.warn(`No events written: ${writeProblem(error, seen.eventsFolder)}`);
  }
}

/** The command up to its exit code; what the events need is left in `seen`, the log still open. */
async function runOperation<Settings>(
  verb: Verb,
  deps: PipelineDependencies<Settings>,
  seen: CommandSeen,
): Promise<CommandResult> {
  const operation = (deps.operations ?? defaultOperations)[verb];
  const { extension, clock, version } = deps;
  const deadline = startDeadline(operation.deadlineSeconds * 1000, clock);
  const secrets = new Set<string>();
  let log: Log | undefined;
  let lock: HeldLock | undefined;
  let statusFolder = path.join(deps.handlerDir, 'status');
  let sequenceNumber = 0;

  /** Why the status file could not be written, once it could not be: exit code 64. */
  let statusProblem: string | undefined;
  const warned = new Set<string>();
  const report = async (
    status: StatusValue,
    code: number,
    message: string,
    substatus: readonly Substatus[] = [],
  ) => {
    const safeMessage = redact(message, secrets);
    const statusReport: StatusReport = {
      operation: operation.title,
      status,
      code,
      message: safeMessage,
      substatus: substatus.map((entry) => ({ ...entry, message: redact(entry.message, secrets) })),
    };
    if (status !== 'transitioning') seen.steps = statusReport.substatus ?? [];
    try {
      await writeStatus(statusFolder, sequenceNumber, statusReport, {
        handlerName: extension.handlerName,
        now: clock.now(),
      });
      return true;
    } catch (error) {
      statusProblem = `Cannot write the status file ${statusFilePath(statusFolder, sequenceNumber)}: ${writeProblem(error, statusFolder)}.`;
      if (!warned.has(statusProblem)) {
        warned.add(statusProblem);
        log?.error(statusProblem);
        deps.warn?.(statusProblem);
      }
      return false;
    }
  };

  /**
   * The result when the status file cannot be written: 64, whatever the operation did, with the
   * reason first (the agent shows this line instead of a status) and then what the operation did.
   */
  const unreported = (outcome: string): CommandResult => {
    const failure = new HandlerFailure('cannotWriteHandlerFiles', `${statusProblem} ${outcome}`);
    return { exitCode: failure.code, status: 'error', message: failure.operatorMessage };
  };

  const fail = async (error: unknown): Promise<CommandResult> => {
    const failure = toFailure(error);
    const full = redact(`${operation.title} failed: ${failure.operatorMessage}`, secrets);
    log?.error(full, { code: failure.code, kind: failure.kind });
    const message = keepRemedy(full, failureKinds[failure.kind].remedy);
    const written = await report('error', failure.statusCode, message, failure.steps);
    if (!written) {
      // Already the failure to write the status (the progress report's): it says it all.
      if (statusProblem !== undefined && full.includes(statusProblem)) {
        return { exitCode: failure.code, status: 'error', message: full };
      }
      return unreported(full);
    }
    return { exitCode: failure.code, status: 'error', message };
  };

  try {
    // 1. Environment: where the agent wants config, status and logs.
    let environment: HandlerEnvironment;
    try {
      environment = await readHandlerEnvironment(deps.handlerDir, { clock });
    } catch (error) {
      sequenceNumber = (
        await resolveSequenceNumber(deps.env, path.join(deps.handlerDir, 'config')).catch(() => ({
          value: 0,
        }))
      ).value;
      return await fail(error);
    }
    statusFolder = environment.statusFolder;
    seen.eventsFolder = environment.eventsFolder;

    // 2. Sequence number, and the log that names it on every line.
    const sequence = await resolveSequenceNumber(deps.env, environment.configFolder);
    sequenceNumber = sequence.value;
    seen.sequenceNumber = sequenceNumber;
    log = sharingSecrets(
      deps.createLog({
        folder: environment.logFolder,
        fileName: extension.logFileName,
        context: { operation: verb, sequenceNumber, version },
      }),
      secrets,
    );
    seen.log = log;
    for (const secret of secrets) log.addSecret(secret);
    const agent = agentHints(deps.env);
    log.info(`${operation.title} started`, {
      sequenceNumberFrom: sequence.source,
      deadlineSeconds: operation.deadlineSeconds,
      updatingFrom: agent.updatingFromVersion,
      updatingTo: agent.updatingToVersion,
    });

    // 3. One command of this handler at a time, old and new versions alike.
    const folder = stateFolder(deps.handlerDir, extension.handlerName);
    lock = await acquireLock({
      file: path.join(folder, 'lock'),
      operation: verb,
      version,
      clock,
      waitMs: Math.max(0, deadline.remainingMs() - LOCK_RESERVE_MS),
      signal: deadline.signal,
      ...(deps.processTable ? { processes: deps.processTable } : {}),
      onWait: (holder) =>
        log?.warn('Waiting for another command of this extension to finish', {
          holderOperation: holder?.operation,
          holderVersion: holder?.version,
          holderPid: holder?.pid,
        }),
    });
    const store = fileStateStore(path.join(folder, 'state.json'));
    const loaded = await store.load();
    if (loaded.problem) log.warn(loaded.problem);
    let current = loaded.state;

    // 4. Settings: public ones validated by the extension, protected ones decrypted.
    const { settings, protectedSettings } = await loadSettings(operation, {
      extension,
      configFolder: environment.configFolder,
      sequenceNumber,
      certificateFolder: agentLibDir(deps.handlerDir, deps.env),
      processes: deps.processes,
      signal: deadline.signal,
      log,
      secrets,
    });

    // 5. Progress, the work itself inside the deadline, and the result.
    // A command whose result cannot be reported changes nothing: stop before the work.
    if (
      operation.reports === 'progress' &&
      !(await report('transitioning', 0, `${operation.title} in progress.`))
    ) {
      throw new HandlerFailure(
        'cannotWriteHandlerFiles',
        `${statusProblem} The command stopped before changing anything.`,
      );
    }
    const context: OperationContext<Settings> = {
      operation,
      sequenceNumber,
      version,
      handlerDir: deps.handlerDir,
      libDir: agentLibDir(deps.handlerDir, deps.env),
      settings,
      protectedSettings,
      agent,
      state: loaded.state,
      saveState: async (change) => {
        const next = change(current);
        // A change that changes nothing is not written: a converged enable writes its state once.
        if (JSON.stringify(next) !== JSON.stringify(current)) await store.save(next);
        current = next;
        return next;
      },
      currentState: () => current,
      remainingMs: deadline.remainingMs,
      log,
      signal: deadline.signal,
      clock,
      processes: deps.processes,
    };
    const outcome = await deadline.race(work(verb, extension, context, agent));
    const message = redact(
      `${operation.title} ${outcome.status === 'success' ? 'succeeded' : 'finished with warnings'}: ${outcome.message}`,
      secrets,
    );
    await saveState(store, current, verb, outcome, {
      sequenceNumber,
      version,
      agent,
      at: clock.now().toISOString(),
    });
    log.info(message);
    if (!(await report(outcome.status, 0, message, outcome.substatus))) {
      return unreported(`${message.replace(/\.?$/, '')}, but its status could not be written.`);
    }
    return { exitCode: 0, status: outcome.status, message };
  } catch (error) {
    return await fail(deadline.signal.aborted ? deadline.signal.reason : error);
  } finally {
    deadline.stop();
    await lock?.release().catch(() => undefined);
  }
}

/**
 * The log, whose secrets (a protected setting, a key the extension read) are also kept out of the
 * status and the events: the pipeline redacts those with `secrets`.
 */
function sharingSecrets(log: Log, secrets: Set<string>): Log {
  return {
    debug: (message, fields) => log.debug(message, fields),
    info: (message, fields) => log.info(message, fields),
    warn: (message, fields) => log.warn(message, fields),
    error: (message, fields) => log.error(message, fields),
    addSecret: (secret) => {
      secrets.add(secret);
      log.addSecret(secret);
    },
    close: () => log.close(),
  };
}

/**
 * A failure message within what the agent shows (it cuts at MAX_MESSAGE_CHARS): a long detail (a
 * long mirror URL, a tool's output) is shortened, never the remedy at the end, which is the part
 * a person acts on.
 */
function keepRemedy(message: string, remedy: string): string {
  if (message.length <= MAX_MESSAGE_CHARS || !message.endsWith(remedy)) return message;
  return `${message.slice(0, MAX_MESSAGE_CHARS - remedy.length - 3)} … ${remedy}`;
}

/**
 * The settings an operation works with. Operations that do not read settings get the extension's
 * defaults, so a settings file they cannot use never fails them.
 */
export async function loadSettings<Settings>(
  operation: Operation,
  options: {
    extension: Extension<Settings>;
    configFolder: string;
    sequenceNumber: number;
    certificateFolder: string;
    processes: Processes;
    signal: AbortSignal;
    log: Log;
    secrets: Set<string>;
  },
): Promise<{ settings: Settings; protectedSettings: Record<string, unknown> | undefined }> {
  const { extension, log } = options;
  if (!operation.readsSettings) {
    return { settings: extension.parseSettings({}).settings, protectedSettings: undefined };
  }
  const file = await readSettings(options.configFolder, options.sequenceNumber);
  let protectedSettings: Record<string, unknown> | undefined;
  if (file.protectedSettings) {
    protectedSettings = await decryptProtectedSettings(file.protectedSettings, {
      certificateFolder: options.certificateFolder,
      processes: options.processes,
      signal: options.signal,
    });
    for (const secret of secretValues(protectedSettings)) {
      options.secrets.add(secret);
      log.addSecret(secret);
    }
  }
  const { settings, warnings } = extension.parseSettings(file.publicSettings);
  for (const warning of warnings) log.warn(warning);
  log.info('Settings read', {
    file: file.file ?? 'none',
    protectedSettings: protectedSettings ? 'present' : 'none',
  });
  return { settings, protectedSettings };
}

/**
 * The extension's work for one operation, with the ownership rule of updates: an `uninstall` by a
 * version that no longer owns the installation (the new version's `update` took it over) leaves
 * everything in place.
 */
async function work<Settings>(
  verb: Verb,
  extension: Extension<Settings>,
  context: OperationContext<Settings>,
  agent: AgentHints,
): Promise<Outcome> {
  const { state } = context;
  if (verb === 'uninstall' && state.owner !== null && state.owner !== context.version) {
    context.log.info('Leaving the installation to the version that owns it', {
      owner: state.owner,
      updatingFrom: agent.updatingFromVersion,
    });
    return {
      status: 'success',
      message: `version ${context.version} left the installation in place for version ${state.owner}, which owns it now.`,
    };
  }
  return extension.run[verb](context);
}

async function saveState(
  store: StateStore,
  state: HandlerState,
  verb: Verb,
  outcome: Outcome,
  facts: { sequenceNumber: number; version: string; agent: AgentHints; at: string },
): Promise<void> {
  let next: HandlerState = recordApplied(state, {
    sequenceNumber: facts.sequenceNumber,
    operation: verb,
    version: facts.version,
    status: outcome.status,
    at: facts.at,
  });
  if (outcome.installed) next = { ...next, installed: outcome.installed };
  switch (verb) {
    case 'install':
    case 'enable':
      next = { ...next, owner: facts.version };
      break;
    case 'update':
      next = { ...next, owner: facts.agent.updatingToVersion ?? facts.version };
      break;
    case 'uninstall':
      if (state.owner === null || state.owner === facts.version) {
        next = { ...next, owner: null, installed: {}, journal: [] };
      }
      break;
    case 'disable':
      break;
  }
  await store.save(next);
}

/** Reads the agent's per-operation variables; "NOT_RUN" and "None" mean "not given". */
export function agentHints(env: Readonly<Record<string, string | undefined>>): AgentHints {
  const text = (name: string) => {
    const value = env[name]?.trim();
    return value && value !== 'NOT_RUN' && value !== 'None' ? value : undefined;
  };
  const code = (name: string) => {
    const value = text(name);
    return value !== undefined && /^-?\d+$/.test(value) ? Number(value) : undefined;
  };
  return {
    updatingFromVersion: text('AZURE_GUEST_AGENT_UPDATING_FROM_VERSION'),
    updatingToVersion: text('VERSION'),
    disableExitCode: code('AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE'),
    uninstallExitCode: code('AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE'),
  };
}

interface Deadline {
  signal: AbortSignal;
  remainingMs(): number;
  /** Settles with `work`, or rejects with `deadlineExceeded` when the deadline comes first. */
  race<T>(work: Promise<T>): Promise<T>;
  stop(): void;
}

function startDeadline(ms: number, clock: Clock): Deadline {
  const controller = new AbortController();
  const startedAt = clock.now().getTime();
  const timer = setTimeout(() => {
    controller.abort(
      new HandlerFailure(
        'deadlineExceeded',
        `The command stopped itself after ${Math.round(ms / 1000)} s, before the guest agent's timeout.`,
      ),
    );
  }, ms);
  return {
    signal: controller.signal,
    remainingMs: () => ms - (clock.now().getTime() - startedAt),
    race: (work) =>
      new Promise((resolve, reject) => {
        if (controller.signal.aborted) return reject(controller.signal.reason);
        const onAbort = () => reject(controller.signal.reason);
        controller.signal.addEventListener('abort', onAbort, { once: true });
        work.then(resolve, reject).finally(() => {
          controller.signal.removeEventListener('abort', onAbort);
        });
      }),
    stop: () => clearTimeout(timer),
  };
}
