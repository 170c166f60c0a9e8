import { promises as fs } from 'node:fs';
import path from 'node:path';
import { HANDLER_ENVIRONMENT_FILE, parseHandlerEnvironment } from './handler-environment.js';
import { resolveSequenceNumber } from './sequence.js';
import { writeStatus } from './status.js';

/**
 * Writes an `error` status when something failed outside the pipeline's control (a crash the
 * pipeline could not catch): the status folder from HandlerEnvironment.json when it is readable,
 * else the agent's default `<handler>/status`.
 */
export async function writeLastResortStatus(options: {
  handlerDir: string;
  env: Readonly<Record<string, string | undefined>>;
  handlerName: string;
  operation: string;
  code: number;
  message: string;
}): Promise<void> {
  const text = await fs
    .readFile(path.join(options.handlerDir, HANDLER_ENVIRONMENT_FILE), 'utf8')
    .catch(() => '');
  const parsed = parseHandlerEnvironment(text);
  const statusFolder = parsed.ok
    ? parsed.value.statusFolder
    : path.join(options.handlerDir, 'status');
  const configFolder = parsed.ok
    ? parsed.value.configFolder
    : path.join(options.handlerDir, 'config');
  const sequence = await resolveSequenceNumber(options.env, configFolder);
  const operation = options.operation.charAt(0).toUpperCase() + options.operation.slice(1);
  await writeStatus(
    statusFolder,
    sequence.value,
    { operation, status: 'error', code: options.code, message: options.message },
    { handlerName: options.handlerName, now: new Date() },
  );
}
