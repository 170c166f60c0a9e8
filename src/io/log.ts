import {
  closeSync,
  constants,
  fstatSync,
  mkdirSync,
  openSync,
  renameSync,
  statSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';
import { writeProblem } from './files.js';

export type LogFields = Record<string, string | number | boolean | null | undefined>;

/** The handler's log. Every line carries the operation, sequence number and handler version. */
export interface Log {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  /** Adds a value that must never appear in the log (a decrypted setting, a token). */
  addSecret(secret: string): void;
  /** Flushes and closes the log file. */
  close(): Promise<void>;
}

export interface LogContext {
  operation: string;
  sequenceNumber: number | undefined;
  version: string;
}

const REDACTED = '[REDACTED]';

/** Patterns that are secrets whatever their source: JWTs, token fields, bearer tokens. */
const SECRET_PATTERNS: ReadonlyArray<readonly [RegExp, string]> = [
  [/eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*/g, REDACTED],
  [
    /("(?:access_token|refresh_token|client_secret|protectedSettings)"\s*:\s*")[^"]*"/g,
    `$1${REDACTED}"`,
  ],
  [/(Bearer\s+)[A-Za-z0-9._~+/=-]+/g, `$1${REDACTED}`],
];

/** Removes every known secret and anything shaped like a token from `text`. */
export function redact(text: string, secrets: Iterable<string>): string {
  let result = text;
  for (const secret of secrets) {
    if (secret.length >= 4) result = result.split(secret).join(REDACTED);
  }
  for (const [pattern, replacement] of SECRET_PATTERNS) {
    result = result.replace(pattern, replacement);
  }
  return result;
}

function redactFields(fields: LogFields | undefined, secrets: Iterable<string>) {
  if (!fields) return undefined;
  return Object.fromEntries(
    Object.entries(fields).map(([key, value]) => [
      key,
      typeof value === 'string' ? redact(value, secrets) : value,
    ]),
  );
}

function formatFields(fields: LogFields | undefined): string {
  if (!fields) return '';
  const parts: string[] = [];
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    const text = String(value);
    parts.push(`${key}=${/[\s"=]/.test(text) || text === '' ? JSON.stringify(text) : text}`);
  }
  return parts.length ? ` ${parts.join(' ')}` : '';
}

/** Formats one event as one line (newlines inside a message are escaped). */
export function formatLine(
  timestamp: Date,
  level: string,
  context: LogContext,
  message: string,
  fields?: LogFields,
): string {
  const seq = context.sequenceNumber === undefined ? '-' : String(context.sequenceNumber);
  const text = `${message}${formatFields(fields)}`.replace(/\r?\n/g, '\\n');
  return `${timestamp.toISOString()} ${level.toUpperCase().padEnd(5)} [${context.operation} seq=${seq} v=${context.version} pid=${process.pid}] ${text}`;
}

export interface FileLogOptions {
  folder: string;
  fileName: string;
  context: LogContext;
  /** Rotation: size of one file, and how many rotated files to keep. */
  maxBytes?: number;
  maxFiles?: number;
  /** Where to say that the log folder cannot be written (the log itself never fails a command). */
  onProblem?: (message: string) => void;
}

/**
 * A log file in the agent's log folder, rotated by size (`maxFiles` files of `maxBytes` each), one
 * line per event, secrets redacted. If the folder cannot be written, events are dropped and the
 * problem is reported once through `onProblem`: a log never fails the operation.
 */
export function createFileLog(options: FileLogOptions): Log {
  const secrets = new Set<string>();
  let reported = false;
  const problem = (message: string) => {
    if (reported) return;
    reported = true;
    options.onProblem?.(message);
  };
  try {
    mkdirSync(options.folder, { recursive: true, mode: 0o755 });
  } catch (error) {
    problem(
      `The handler log folder ${options.folder} cannot be created: ${writeProblem(error, path.dirname(options.folder))}. The command goes on without its log.`,
    );
    return createNullLog(secrets);
  }
  const append = rotatingFileAppender(
    path.join(options.folder, options.fileName),
    options.maxBytes ?? 1024 * 1024,
    options.maxFiles ?? 5,
    problem,
  );
  let closed = false;
  const write = (level: string) => (message: string, fields?: LogFields) => {
    if (closed) return;
    // Redacted before formatting too: formatting escapes quotes, backslashes and newlines, and
    // a secret holding one of them would no longer be found in the formatted line.
    const line = formatLine(
      new Date(),
      level,
      options.context,
      redact(message, secrets),
      redactFields(fields, secrets),
    );
    append(`${redact(line, secrets)}\n`);
  };
  return {
    debug: write('debug'),
    info: write('info'),
    warn: write('warn'),
    error: write('error'),
    addSecret: (secret) => secrets.add(secret),
    close: async () => {
      closed = true;
    },
  };
}

/** What opening the log reports when something other than a regular file holds its name. */
const NOT_A_REGULAR_FILE: Readonly<Record<string, string>> = {
  ELOOP: 'a symbolic link',
  EISDIR: 'a folder',
  ENXIO: 'a FIFO',
  ENOTREG: 'a FIFO, socket or device',
};

/**
 * Appends each line synchronously (a command writes a few dozen lines, and none may be lost when
 * the process exits right after; no logging library: the converged enable cannot afford loading
 * one, docs/performance.md) and rotates by size: `file` → `file.1` → … →
 * `file.<maxFiles-1>`, the oldest dropped. Anything but a regular file at `file` (a symlink, a
 * folder, a FIFO that would block the command forever) makes the line a reported problem, as
 * does a full or read-only file system.
 */
function rotatingFileAppender(
  file: string,
  maxBytes: number,
  maxFiles: number,
  problem: (message: string) => void,
): (line: string) => void {
  const rotateFor = (bytes: number) => {
    let size = 0;
    try {
      size = statSync(file).size;
    } catch {
      return;
    }
    if (size === 0 || size + bytes <= maxBytes) return;
    for (let index = maxFiles - 1; index >= 1; index--) {
      try {
        renameSync(index === 1 ? file : `${file}.${index - 1}`, `${file}.${index}`);
      } catch {
        // an older file that does not exist yet
      }
    }
  };
  return (line) => {
    const chunk = Buffer.from(line);
    try {
      rotateFor(chunk.length);
      // O_NOFOLLOW: a symlink planted at the log's name is never written through. O_NONBLOCK:
      // a FIFO there fails to open (ENXIO) instead of waiting for a reader.
      const fd = openSync(
        file,
        constants.O_WRONLY |
          constants.O_APPEND |
          constants.O_CREAT |
          (constants.O_NOFOLLOW ?? 0) |
          (constants.O_NONBLOCK ?? 0),
        0o644,
      );
      try {
        if (!fstatSync(fd).isFile()) throw Object.assign(new Error(), { code: 'ENOTREG' });
        for (let written = 0; written < chunk.length; ) {
          written += writeSync(fd, chunk, written);
        }
      } finally {
        closeSync(fd);
      }
    } catch (error) {
      const squatter = NOT_A_REGULAR_FILE[(error as NodeJS.ErrnoException).code ?? ''];
      const reason = squatter
        ? `${squatter} is in its place; move it away so that the handler can log again`
        : writeProblem(error, path.dirname(file));
      problem(
        `The handler log ${file} cannot be written: ${reason}. The command goes on without its log.`,
      );
    }
  };
}

function createNullLog(secrets: Set<string>): Log {
  const ignore = () => undefined;
  return {
    debug: ignore,
    info: ignore,
    warn: ignore,
    error: ignore,
    addSecret: (secret) => secrets.add(secret),
    close: async () => undefined,
  };
}
