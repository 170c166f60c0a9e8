import path from 'node:path';
import { HandlerFailure } from '../failures.js';
import type { Clock } from '../io/clock.js';
import { errorMessage, readTextIfExists } from '../io/files.js';
import { z } from '../io/zod.js';

/**
 * `HandlerEnvironment.json`, written by the guest agent into the handler's folder before
 * `install`. The Linux agent writes `version` as the number 1.0 and `eventsFolder` only when it
 * supports the telemetry pipeline; the Windows agent adds keys of its own.
 */
const handlerEnvironmentFileSchema = z
  .array(
    z.object({
      name: z.string().optional(),
      version: z.number(),
      handlerEnvironment: z.looseObject({
        logFolder: z.string().min(1),
        configFolder: z.string().min(1),
        statusFolder: z.string().min(1),
        heartbeatFile: z.string().optional(),
        eventsFolder: z.string().optional(),
        eventsFolder_preview: z.string().optional(),
        deploymentid: z.string().optional(),
        rolename: z.string().optional(),
        instance: z.string().optional(),
        hostResolverAddress: z.string().optional(),
      }),
    }),
  )
  .min(1);

export interface HandlerEnvironment {
  logFolder: string;
  configFolder: string;
  statusFolder: string;
  heartbeatFile: string | undefined;
  eventsFolder: string | undefined;
}

export const HANDLER_ENVIRONMENT_FILE = 'HandlerEnvironment.json';

export interface ReadOptions {
  clock: Clock;
  /** How many times to read before giving up: the agent may be writing the file right now. */
  attempts?: number;
  delayMs?: number;
}

/**
 * Reads `HandlerEnvironment.json` from the handler's folder. A file that is missing or does not
 * parse is read again a few times (the agent may be writing it) before this fails with
 * `handlerEnvironmentInvalid`, naming the file and what is wrong with it.
 */
export async function readHandlerEnvironment(
  handlerDir: string,
  { clock, attempts = 5, delayMs = 300 }: ReadOptions,
): Promise<HandlerEnvironment> {
  const file = path.join(handlerDir, HANDLER_ENVIRONMENT_FILE);
  let problem = '';
  for (let attempt = 1; attempt <= attempts; attempt++) {
    if (attempt > 1) await clock.sleep(delayMs);
    let text: string | undefined;
    try {
      text = await readTextIfExists(file);
    } catch (error) {
      problem = errorMessage(error);
      continue;
    }
    if (text === undefined) {
      problem = 'it does not exist';
      continue;
    }
    const parsed = parseHandlerEnvironment(text);
    if (parsed.ok) return parsed.value;
    problem = parsed.problem;
  }
  throw new HandlerFailure('handlerEnvironmentInvalid', `Cannot use ${file}: ${problem}.`);
}

/** Parses the file's text; a failure names the first thing wrong with it. */
export function parseHandlerEnvironment(
  text: string,
): { ok: true; value: HandlerEnvironment } | { ok: false; problem: string } {
  let json: unknown;
  try {
    json = JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch (error) {
    return { ok: false, problem: `it is not valid JSON (${errorMessage(error)})` };
  }
  const result = handlerEnvironmentFileSchema.safeParse(json);
  if (!result.success) {
    const issue = result.error.issues[0];
    const where = issue?.path.length ? issue.path.join('.') : 'the top level';
    return { ok: false, problem: `${where}: ${issue?.message ?? 'invalid'}` };
  }
  const env = result.data[0]?.handlerEnvironment;
  if (!env) return { ok: false, problem: 'it is an empty array' };
  return {
    ok: true,
    value: {
      logFolder: env.logFolder,
      configFolder: env.configFolder,
      statusFolder: env.statusFolder,
      heartbeatFile: env.heartbeatFile,
      eventsFolder: env.eventsFolder,
    },
  };
}
