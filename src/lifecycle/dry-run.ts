import path from 'node:path';
import { HandlerFailure, toFailure } from '../failures.js';
import type { Clock } from '../io/clock.js';
import { readTextIfExists } from '../io/files.js';
import { formatLine, type Log, type LogFields, redact } from '../io/log.js';
import { readHandlerEnvironment } from '../protocol/handler-environment.js';
import { resolveSequenceNumber } from '../protocol/sequence.js';
import type { DryRunContext } from './extension.js';
import { operations, type Verb } from './operations.js';
import {
  agentHints,
  agentLibDir,
  type CommandResult,
  loadSettings,
  type PipelineDependencies,
  stateFolder,
} from './pipeline.js';
import { emptyState, type HandlerState, handlerStateSchema } from './state.js';

/** The operations that can be dry-run: the ones that change the VM from the settings. */
const DRY_RUN_VERBS: readonly Verb[] = ['install', 'enable'];

/**
 * `<verb> --dry-run`: reads what the real command reads (the handler environment, the newest
 * settings, the handler state) and asks the extension for the plan it would apply, then prints it.
 * A path beside the pipeline rather than an option of it: it takes no lock and has no status, state
 * or journal to write, so nothing here can write them. Its log goes to stderr, not to the
 * handler's log file; the plan goes to stdout. Exit 0 when the plan could be made, otherwise the
 * failure's catalogue code.
 */
export async function runDryRun<Settings>(
  verb: Verb,
  deps: PipelineDependencies<Settings>,
): Promise<CommandResult> {
  const operation = operations[verb];
  const { extension, clock } = deps;
  const title = `${operation.title} --dry-run`;
  const secrets = new Set<string>();
  const controller = new AbortController();
  const startedAt = clock.now().getTime();
  const deadlineMs = operation.deadlineSeconds * 1000;
  const timer = setTimeout(
    () =>
      controller.abort(
        new HandlerFailure(
          'deadlineExceeded',
          `The dry run stopped itself after ${operation.deadlineSeconds} s.`,
        ),
      ),
    deadlineMs,
  );
  try {
    if (!extension.dryRun || !DRY_RUN_VERBS.includes(verb)) {
      throw new HandlerFailure(
        'unknownCommand',
        `--dry-run is for ${DRY_RUN_VERBS.join(' and ')} of this extension, not ${verb}.`,
      );
    }
    const environment = await readHandlerEnvironment(deps.handlerDir, { clock });
    const sequence = await resolveSequenceNumber(deps.env, environment.configFolder);
    const log = stderrLog(
      { operation: `${verb} --dry-run`, sequenceNumber: sequence.value, version: deps.version },
      secrets,
      clock,
    );
    const state = await readState(
      path.join(stateFolder(deps.handlerDir, extension.handlerName), 'state.json'),
      log,
    );
    const libDir = agentLibDir(deps.handlerDir, deps.env);
    const { settings, protectedSettings } = await loadSettings(operation, {
      extension,
      configFolder: environment.configFolder,
      sequenceNumber: sequence.value,
      certificateFolder: libDir,
      processes: deps.processes,
      signal: controller.signal,
      log,
      secrets,
    });
    const context: DryRunContext<Settings> = {
      operation,
      sequenceNumber: sequence.value,
      version: deps.version,
      handlerDir: deps.handlerDir,
      libDir,
      settings,
      protectedSettings,
      agent: agentHints(deps.env),
      state,
      remainingMs: () => deadlineMs - (clock.now().getTime() - startedAt),
      log,
      signal: controller.signal,
      clock,
      processes: deps.processes,
    };
    const lines = await extension.dryRun(context);
    const message = redact(
      [
        `${title}: nothing was changed. Settings of sequence number ${sequence.value} (${environment.configFolder}).`,
        ...lines,
      ].join('\n'),
      secrets,
    );
    return { exitCode: 0, status: 'success', message };
  } catch (error) {
    const failure = toFailure(controller.signal.aborted ? controller.signal.reason : error);
    // The failing step, when it says more than the message that follows.
    const steps = failure.steps
      .filter((step) => step.status === 'error' && step.message !== failure.detail)
      .map((step) => `  ${step.name}: ${step.message}`);
    const message = redact(
      [
        `${title} failed (exit ${failure.code}); nothing was changed.`,
        ...steps,
        failure.operatorMessage,
      ].join('\n'),
      secrets,
    );
    return { exitCode: failure.code, status: 'error', message };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The handler state as the real command would load it, only read: an unreadable file counts as
 * empty (the real command moves it aside; a dry run leaves it where it is).
 */
async function readState(file: string, log: Log): Promise<HandlerState> {
  const text = await readTextIfExists(file);
  if (text === undefined) return emptyState();
  try {
    const parsed = handlerStateSchema.safeParse(JSON.parse(text));
    if (parsed.success) return parsed.data;
  } catch {
    // reported below
  }
  log.warn(`The handler state ${file} is unreadable; planning as if it were empty`);
  return emptyState();
}

/** The dry run's log: every event on stderr, so that stdout holds only the plan. */
function stderrLog(
  context: Parameters<typeof formatLine>[2],
  secrets: Set<string>,
  clock: Clock,
): Log {
  const write = (level: string) => (message: string, fields?: LogFields) => {
    process.stderr.write(
      `${redact(formatLine(clock.now(), level, context, message, fields), secrets)}\n`,
    );
  };
  return {
    debug: () => undefined,
    info: write('info'),
    warn: write('warn'),
    error: write('error'),
    addSecret: (secret) => secrets.add(secret),
    close: async () => undefined,
  };
}
