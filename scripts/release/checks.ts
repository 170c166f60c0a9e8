/**
 * Does a filled-in definition describe the zip it points at? Everything is read from the zip
 * itself (its name, its HandlerManifest.json, the executables under bin/, its sizes), never from
 * the build's own tables, so a zip changed after the build is judged as it is.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { checkManifest } from '../package.js';
import {
  compareDefinitions,
  type DefinitionFields,
  readArmDefinition,
  readExtensionImage,
} from './definitions.js';
import { executablesIn } from './executables.js';
import { mebibytes, megabytes, type SizeLimits } from './limits.js';
import { entryData, readZip, type ZipArchive } from './zip-read.js';

/** The extension a release is for, as the repository defines it. */
export interface ExpectedExtension {
  namespace: string;
  type: string;
  /** The four-part version (package.json through src/version.ts). */
  version: string;
  /**
   * The extension the zip was built as, when it is published under another type (a test type,
   * see `--test-type-suffix`): its HandlerManifest.json name, its zip's name and its size budget.
   */
  builtAs?: string;
}

/** One extension's artifacts: the zip and the filled-in definitions. */
export interface ExtensionArtifacts {
  zip: string;
  /** The filled-in `ExtensionImage` XML, and the name to report it under. */
  xml: { name: string; text: string };
  /** The filled-in ARM JSON twin, and the name to report it under. */
  json: { name: string; text: string };
}

/** The architectures each operating system's zip must carry executables for (x64 first). */
const EXECUTABLE_FORMAT: Record<string, { format: string; label: string }> = {
  Linux: { format: 'ELF64', label: 'ELF' },
  Windows: { format: 'PE32+', label: 'PE32+' },
};

/** The zip's name the contract fixes: `<namespace>.<type>-<version>.zip`. */
export function zipName(extension: ExpectedExtension): string {
  return `${extension.namespace}.${extension.type}-${extension.version}.zip`;
}

function compareIdentity(
  file: string,
  fields: DefinitionFields,
  expected: ExpectedExtension,
): string[] {
  const problems: string[] = [];
  const pairs: [string, string, string, string][] = [
    ['namespace', fields.namespace, expected.namespace, 'the publisher'],
    ['type', fields.type, expected.type, 'the extension type'],
    ['version', fields.version, expected.version, 'package.json'],
  ];
  for (const [what, actual, wanted, source] of pairs) {
    if (actual !== wanted) {
      problems.push(`${file}: the ${what} is "${actual}" but ${source} says "${wanted}"`);
    }
  }
  return problems;
}

function checkHandlerManifest(archive: ZipArchive, zip: string, type: string): string[] {
  const entry = archive.entries.find((candidate) => candidate.name === 'HandlerManifest.json');
  if (!entry) return [`${zip}: there is no HandlerManifest.json at the zip's root`];
  const text = entryData(archive, entry).toString('utf8');
  let problems: string[];
  try {
    problems = checkManifest(
      text,
      archive.entries.map((candidate) => candidate.name),
    );
  } catch (error) {
    return [`${zip}: HandlerManifest.json is not JSON: ${(error as Error).message}`];
  }
  const first = (JSON.parse(text) as Record<string, unknown>[])[0] ?? {};
  const handler = (first.handlerManifest ?? {}) as Record<string, unknown>;
  if (first.name !== undefined && first.name !== type) {
    problems.push(`"name" is "${String(first.name)}", not the type "${type}"`);
  }
  if (typeof handler.updateMode !== 'string') problems.push('updateMode must be stated');
  if (typeof handler.rebootAfterInstall !== 'boolean') {
    problems.push('rebootAfterInstall must be a JSON boolean');
  }
  return problems.map((problem) => `${zip}: HandlerManifest.json: ${problem}`);
}

function checkExecutables(
  archive: ZipArchive,
  zip: string,
  supportedOS: string,
  architectures: readonly string[],
): string[] {
  const expected = EXECUTABLE_FORMAT[supportedOS];
  if (!expected) return [];
  const problems: string[] = [];
  const executables = executablesIn(archive);
  for (const executable of executables) {
    if (executable.format !== expected.format) {
      problems.push(
        `${zip}: SupportedOS is ${supportedOS} but ${executable.path} is ${executable.format} (${executable.architecture}), not ${expected.label}`,
      );
    } else if (!architectures.includes(executable.architecture)) {
      problems.push(
        `${zip}: ${executable.path} is built for ${executable.architecture}, which supportedArchitectures [${architectures.join(', ')}] does not list`,
      );
    }
  }
  for (const architecture of architectures) {
    const found = executables.some(
      (executable) =>
        executable.format === expected.format && executable.architecture === architecture,
    );
    if (!found) {
      problems.push(
        `${zip}: SupportedOS is ${supportedOS} with supportedArchitectures [${architectures.join(', ')}], but no ${expected.label} ${architecture} executable is under bin/`,
      );
    }
  }
  return problems;
}

async function checkSizes(
  archive: ZipArchive,
  zip: string,
  type: string,
  limits: SizeLimits,
): Promise<string[]> {
  const problems: string[] = [];
  const compressed = (await fs.stat(archive.path)).size;
  const unpacked = archive.entries.reduce((sum, entry) => sum + entry.size, 0);
  if (compressed > limits.maxZipBytes) {
    problems.push(
      `${zip} is ${mebibytes(compressed)}, over the platform's limit of ${mebibytes(limits.maxZipBytes)} for a zip`,
    );
  }
  if (unpacked > limits.maxUnpackedBytes) {
    problems.push(
      `${zip} unpacks to ${mebibytes(unpacked)}, over the platform's limit of ${mebibytes(limits.maxUnpackedBytes)} unpacked`,
    );
  }
  const budget = limits.budgets[type];
  if (budget !== undefined && compressed > budget) {
    problems.push(
      `${zip} is ${megabytes(compressed)}, over our size budget of ${megabytes(budget)} for ${type} (LINUX_ZIP_BUDGET_BYTES in scripts/release/limits.ts, docs/performance.md): make the zip smaller before releasing`,
    );
  }
  return problems;
}

/**
 * Every way the definitions and the zip of one extension disagree with each other or with the
 * repository, and every limit the zip is over. Empty when the extension can be released.
 */
export async function checkExtension(
  artifacts: ExtensionArtifacts,
  expected: ExpectedExtension,
  limits: SizeLimits,
): Promise<string[]> {
  const problems: string[] = [];
  const zip = path.basename(artifacts.zip);
  const builtAs = expected.builtAs ?? expected.type;
  const builtName = zipName({ ...expected, type: builtAs });
  if (zip !== builtName) problems.push(`${zip}: the zip's name must be ${builtName}`);
  const xml = readExtensionImage(artifacts.xml.text);
  problems.push(...xml.problems.map((problem) => `${artifacts.xml.name}: ${problem}`));
  const json = readArmDefinition(artifacts.json.text);
  problems.push(...json.problems.map((problem) => `${artifacts.json.name}: ${problem}`));
  if (xml.fields) problems.push(...compareIdentity(artifacts.xml.name, xml.fields, expected));
  if (json.fields) problems.push(...compareIdentity(artifacts.json.name, json.fields, expected));
  if (xml.fields && json.fields) problems.push(...compareDefinitions(xml.fields, json.fields));
  for (const fields of [xml.fields, json.fields]) {
    if (fields?.mediaLink && !fields.mediaLink.endsWith(`/${zipName(expected)}`)) {
      problems.push(`${zip}: the definitions' MediaLink ${fields.mediaLink} names another file`);
      break;
    }
  }

  let archive: ZipArchive;
  try {
    archive = await readZip(artifacts.zip);
  } catch (error) {
    return [...problems, (error as Error).message];
  }
  problems.push(...checkHandlerManifest(archive, zip, builtAs));
  const supportedOS = xml.fields?.supportedOS ?? json.fields?.supportedOS;
  if (supportedOS && json.architectures) {
    problems.push(...checkExecutables(archive, zip, supportedOS, json.architectures));
  }
  problems.push(...(await checkSizes(archive, zip, builtAs, limits)));
  return problems;
}
