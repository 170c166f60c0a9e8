import { promises as fs, lstatSync } from 'node:fs';
import path from 'node:path';
import { randomHex, writeFileAtomic } from '../io/files.js';
import type { StatusValue, Substatus } from './status.js';

/**
 * Extension events for the guest agent's telemetry pipeline (agent-protocol.md §8): a command
 * writes one file `<digits>.json` into the `eventsFolder` of HandlerEnvironment.json, holding a
 * JSON array of events. The agent collects the folder every 5 minutes, sends what it accepts, and
 * deletes every file in it; an agent that does not collect leaves the files where they are, which
 * is why both the events of one command and the files in the folder are capped.
 */

/** At most this many events per command: its start, up to 8 steps, and its end. */
export const MAX_EVENTS_PER_COMMAND = 10;

/**
 * No file is written while the folder already holds this many: 30 files of at most 10 events are
 * the 300 events the agent (2.7.3.0) sends per handler per collection, and a folder nobody empties
 * must not fill the disk's inodes with events (WALinuxAgent#3080).
 */
export const MAX_FILES_IN_FOLDER = 30;

/** The agent keeps the first 3072 characters of a message; ours end within them. */
export const MAX_EVENT_MESSAGE_CHARS = 3072;

/** One event as the agent reads it: every value a string (2.7.3.0 strips each one). */
export interface AgentEvent {
  Version: string;
  Timestamp: string;
  TaskName: string;
  EventLevel: 'Informational' | 'Warning' | 'Error';
  Message: string;
  EventPid: string;
  EventTid: string;
  OperationId: string;
}

/** What one command did, as its events tell it. */
export interface CommandRecord {
  /** The operation as the agent shows it: `Install`, `Enable`, … */
  task: string;
  /** This handler's four-part version. */
  version: string;
  sequenceNumber: number;
  startedAt: Date;
  endedAt: Date;
  status: StatusValue;
  exitCode: number;
  /** The operator's one-line account of the result. */
  message: string;
  /** Each check's or step's result, in order (the status file's substatus). */
  steps: readonly Substatus[];
}

/** The events of one command: its start, each step's result, and its end with duration and exit code. */
export function commandEvents(record: CommandRecord): AgentEvent[] {
  const operationId = globalThis.crypto.randomUUID();
  const event = (at: Date, level: AgentEvent['EventLevel'], message: string): AgentEvent => ({
    Version: record.version,
    Timestamp: at.toISOString(),
    TaskName: record.task,
    EventLevel: level,
    Message: cut(message),
    EventPid: String(process.pid),
    // One thread: JavaScript's main thread.
    EventTid: '0',
    OperationId: operationId,
  });
  const room = MAX_EVENTS_PER_COMMAND - 2;
  // Steps that did not run (`transitioning`) are not sent; errors and warnings always are, and the
  // steps that succeeded fill the room left, first ones first. Order is kept.
  const ran = record.steps.filter((step) => step.status !== 'transitioning');
  let spare = room - ran.filter((step) => step.status !== 'success').length;
  const steps = ran.filter((step) => step.status !== 'success' || spare-- > 0).slice(-room);
  const leftOut = ran.length - steps.length;
  const durationMs = record.endedAt.getTime() - record.startedAt.getTime();
  return [
    event(
      record.startedAt,
      'Informational',
      `${record.task} started: version ${record.version}, sequence number ${record.sequenceNumber}.`,
    ),
    ...steps.map((step) =>
      event(
        record.endedAt,
        level(step.status),
        `Step ${step.name}: ${step.status} (code ${step.code}): ${step.message}`,
      ),
    ),
    event(
      record.endedAt,
      level(record.status),
      `${record.task} ended: status ${record.status}, exit code ${record.exitCode}, duration ${durationMs} ms` +
        `${leftOut > 0 ? `, ${leftOut} successful steps not sent` : ''}. ${record.message}`,
    ),
  ];
}

/**
 * Writes the events as one new file in the agent's events folder, atomically (a temporary name the
 * agent ignores, then a rename to `<digits>.json`), mode 0600. Writes nothing, and says why, when
 * the folder is missing, is not a real folder (a symlink is never followed) or already holds
 * MAX_FILES_IN_FOLDER files. Returns the file written, or the reason none was.
 */
export async function writeEvents(
  folder: string,
  events: readonly AgentEvent[],
  now: Date,
): Promise<{ file: string } | { skipped: string }> {
  const stat = lstatSync(folder, { throwIfNoEntry: false });
  if (!stat) return { skipped: `the events folder ${folder} does not exist` };
  if (!stat.isDirectory()) {
    return { skipped: `the events folder ${folder} is not a folder (a symlink is not followed)` };
  }
  if ((await countEntries(folder, MAX_FILES_IN_FOLDER)) >= MAX_FILES_IN_FOLDER) {
    return {
      skipped: `the events folder ${folder} already holds ${MAX_FILES_IN_FOLDER} files or more (the guest agent is not collecting them)`,
    };
  }
  // Milliseconds and 6 random digits: names sort by time, and two commands never share one.
  const name = `${now.getTime()}${String(Number.parseInt(randomHex(3), 16) % 1_000_000).padStart(6, '0')}.json`;
  const file = path.join(folder, name);
  await writeFileAtomic(file, JSON.stringify(events.slice(0, MAX_EVENTS_PER_COMMAND)), 0o600);
  return { file };
}

/** The folder's entries, counted up to `limit` only: a folder of a million files is not read whole. */
async function countEntries(folder: string, limit: number): Promise<number> {
  let count = 0;
  for await (const _ of await fs.opendir(folder)) {
    if (++count >= limit) break;
  }
  return count;
}

function level(status: StatusValue): AgentEvent['EventLevel'] {
  if (status === 'error') return 'Error';
  if (status === 'warning') return 'Warning';
  return 'Informational';
}

function cut(message: string): string {
  return message.length <= MAX_EVENT_MESSAGE_CHARS
    ? message
    : `${message.slice(0, MAX_EVENT_MESSAGE_CHARS - 16)} ... [truncated]`;
}
