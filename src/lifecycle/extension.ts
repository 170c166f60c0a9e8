import type { Clock } from '../io/clock.js';
import type { Log } from '../io/log.js';
import type { Processes } from '../io/processes.js';
import type { StatusValue, Substatus } from '../protocol/status.js';
import type { Operation, Verb } from './operations.js';
import type { HandlerState } from './state.js';

/** What the guest agent tells a command through its environment, as hints (values may be "NOT_RUN"). */
export interface AgentHints {
  /** `update`: the version being updated from (`AZURE_GUEST_AGENT_UPDATING_FROM_VERSION`). */
  updatingFromVersion: string | undefined;
  /** `update`: the version being updated to (`VERSION`). */
  updatingToVersion: string | undefined;
  /** `update`: exit code of the old version's `disable`, when it ran. */
  disableExitCode: number | undefined;
  /** `install`/`enable` after an update: exit code of the old version's `uninstall`, when it ran. */
  uninstallExitCode: number | undefined;
}

export interface OperationContext<Settings> {
  operation: Operation;
  sequenceNumber: number;
  /** This handler's four-part version. */
  version: string;
  /** The folder the agent unzipped the handler into, and the agent's folder above it (`Lib.Dir`). */
  handlerDir: string;
  libDir: string;
  settings: Settings;
  /** Decrypted protected settings; every value is already registered as a log secret. */
  protectedSettings: Record<string, unknown> | undefined;
  agent: AgentHints;
  /** The handler state as it was when the command started. */
  state: HandlerState;
  /**
   * Changes the handler state and saves it at once, returning the new state: how a step records
   * what it is about to change (the journal) before changing it, so that a run killed halfway is
   * rolled back by the next one. The pipeline saves the final state on top of the latest one.
   * A change that leaves the state as it is writes nothing.
   */
  saveState(change: (state: HandlerState) => HandlerState): Promise<HandlerState>;
  /** The handler state as last saved (or loaded): what is known even when saving fails. */
  currentState(): HandlerState;
  /** Milliseconds left before the command's own deadline. */
  remainingMs(): number;
  log: Log;
  /** Aborts when the command's deadline arrives; pass it to every slow call. */
  signal: AbortSignal;
  clock: Clock;
  processes: Processes;
}

/**
 * What a dry run gets: an operation's context without the means to save the handler state, which
 * a dry run only reads.
 */
export type DryRunContext<Settings> = Omit<
  OperationContext<Settings>,
  'saveState' | 'currentState'
>;

/** The result of an operation that did not fail. Failures are thrown as `HandlerFailure`. */
export interface Outcome {
  status: Extract<StatusValue, 'success' | 'warning'>;
  message: string;
  substatus?: Substatus[];
  /** Replaces the state's record of what the extension installed, when given. */
  installed?: Record<string, unknown>;
}

/**
 * An extension plugged into the lifecycle pipeline: its name, how it reads its public settings,
 * and what each operation does. The pipeline does everything else (environment, sequence number,
 * lock, status, state, deadline, exit code).
 */
export interface Extension<Settings = unknown> {
  /** `<Publisher>.<Type>`, as in the handler folder's name. */
  handlerName: string;
  /** The log file's name inside the agent's log folder. */
  logFileName: string;
  /**
   * Validates public settings. Unknown keys are returned as warnings; an invalid value throws
   * `HandlerFailure('invalidSettings')` naming the key.
   */
  parseSettings(publicSettings: Record<string, unknown>): {
    settings: Settings;
    warnings: string[];
  };
  run: Readonly<Record<Verb, (context: OperationContext<Settings>) => Promise<Outcome>>>;
  /**
   * `install --dry-run` and `enable --dry-run`: what the operation would do, as lines for a person,
   * found by the operation's own planning code and changing nothing. Without it the option is
   * refused.
   */
  dryRun?(context: DryRunContext<Settings>): Promise<string[]>;
  /**
   * `diagnose`, a command an administrator runs on the VM (never the agent): a read-only report
   * of what the extension depends on, printed as it is; its exit code is the command's. It runs
   * outside the pipeline: no lock, no status, state or log file. Load its code lazily.
   */
  diagnose?: (request: DiagnoseRequest) => Promise<{ exitCode: number; output: string }>;
}

export interface DiagnoseRequest {
  /** The arguments after `diagnose` (`--json`). */
  args: readonly string[];
  handlerDir: string;
  handlerName: string;
  version: string;
}
