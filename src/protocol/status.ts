import { promises as fs } from 'node:fs';
import path from 'node:path';
import { readTextIfExists, writeFileAtomic } from '../io/files.js';
import { z } from '../io/zod.js';

export const STATUS_VALUES = ['transitioning', 'warning', 'error', 'success'] as const;
export type StatusValue = (typeof STATUS_VALUES)[number];

/** The agent cuts `formattedMessage.message` at 1024 characters; we stay inside it. */
export const MAX_MESSAGE_CHARS = 1024;
/** The agent truncates status files larger than 128 KiB. */
export const MAX_STATUS_FILE_BYTES = 128 * 1024;

const formattedMessageSchema = z.object({ lang: z.string(), message: z.string() });

/**
 * A status file by the agent's own rules (`parse_ext_status`): an array whose first element has
 * `status.status` in the valid set, `formattedMessage` with both keys when present, and substatus
 * entries each with a valid `status`. `null` substatus lists and entries are tolerated.
 */
export const agentStatusFileSchema = z
  .array(
    z.looseObject({
      status: z.looseObject({
        status: z.enum(STATUS_VALUES),
        code: z.number().int().optional(),
        operation: z.string().optional(),
        formattedMessage: formattedMessageSchema.optional(),
        substatus: z
          .array(
            z
              .looseObject({
                name: z.string().optional(),
                status: z.enum(STATUS_VALUES),
                code: z.number().int().optional(),
                formattedMessage: formattedMessageSchema.optional(),
              })
              .nullable(),
          )
          .nullish(),
      }),
    }),
  )
  .min(1);

export type AgentStatusFile = z.infer<typeof agentStatusFileSchema>;

export interface Substatus {
  name: string;
  status: StatusValue;
  code: number;
  message: string;
}

export interface StatusReport {
  /** The operation as the agent shows it: `Install`, `Enable`, … */
  operation: string;
  status: StatusValue;
  code: number;
  message: string;
  substatus?: readonly Substatus[];
}

export function statusFilePath(statusFolder: string, sequenceNumber: number): string {
  return path.join(statusFolder, `${sequenceNumber}.status`);
}

export function isTerminal(status: StatusValue): boolean {
  return status !== 'transitioning';
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 16)} ... [truncated]`;
}

/** The status file's text for `report`, inside the agent's limits on message and file size. */
export function renderStatus(report: StatusReport, handlerName: string, now: Date): string {
  const timestampUTC = now.toISOString().replace(/\.\d{3}Z$/, 'Z');
  const substatus = (report.substatus ?? []).map((entry) => ({
    name: truncate(entry.name, 256),
    status: entry.status,
    code: entry.code,
    formattedMessage: { lang: 'en-US', message: truncate(entry.message, MAX_MESSAGE_CHARS) },
  }));
  const build = (entries: typeof substatus) =>
    JSON.stringify([
      {
        version: 1.0,
        timestampUTC,
        status: {
          name: handlerName,
          operation: report.operation,
          status: report.status,
          code: report.code,
          configurationAppliedTime: timestampUTC,
          formattedMessage: { lang: 'en-US', message: truncate(report.message, MAX_MESSAGE_CHARS) },
          substatus: entries,
        },
      },
    ]);
  let text = build(substatus);
  while (Buffer.byteLength(text) > MAX_STATUS_FILE_BYTES && substatus.length > 0) {
    substatus.pop();
    text = build(substatus);
  }
  return text;
}

/** Reads the status file for a sequence number, or `undefined` when it is missing or invalid. */
export async function readStatus(
  statusFolder: string,
  sequenceNumber: number,
): Promise<AgentStatusFile | undefined> {
  const text = await readTextIfExists(statusFilePath(statusFolder, sequenceNumber)).catch(
    () => undefined,
  );
  if (text === undefined) return undefined;
  try {
    const parsed = agentStatusFileSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Writes `status/<seq>.status` atomically. A `transitioning` report never replaces a terminal one
 * for the same sequence number (a re-run would otherwise leave the portal "transitioning" forever
 * if it died); terminal reports always replace what is there, even on a disk too full to hold the
 * old and the new file at once, when the old one is only `transitioning`. Returns whether it wrote.
 */
export async function writeStatus(
  statusFolder: string,
  sequenceNumber: number,
  report: StatusReport,
  { handlerName, now }: { handlerName: string; now: Date },
): Promise<boolean> {
  if (!isTerminal(report.status)) {
    const current = await readStatus(statusFolder, sequenceNumber);
    const currentStatus = current?.[0]?.status.status;
    if (currentStatus && isTerminal(currentStatus)) return false;
  }
  await fs.mkdir(statusFolder, { recursive: true, mode: 0o700 });
  const file = statusFilePath(statusFolder, sequenceNumber);
  const text = renderStatus(report, handlerName, now);
  try {
    await writeFileAtomic(file, text, 0o644);
  } catch (error) {
    // A disk with room for one status file but not for two: the `transitioning` one being
    // replaced holds the room. Without it the result fits; an absent status is better than a
    // progress report that stays for ever.
    const code = (error as NodeJS.ErrnoException).code;
    if (!(code === 'ENOSPC' || code === 'EDQUOT') || !isTerminal(report.status)) throw error;
    const current = await readStatus(statusFolder, sequenceNumber);
    if (current?.[0]?.status.status !== 'transitioning') throw error;
    await fs.rm(file, { force: true });
    await writeFileAtomic(file, text, 0o644);
  }
  return true;
}
