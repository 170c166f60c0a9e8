/**
 * The regions a release is for, as the command line names them: a list (`--regions "A,B"`, also
 * separated by ";"), a file (`--regions-file`, one region per line, "#" starts a comment), or
 * every region (`--all-regions`).
 */
import { promises as fs } from 'node:fs';
import type { Regions } from './definitions.js';
import { ReleaseRefused } from './run.js';

/** The region options of the command line. */
export interface RegionOptions {
  regions?: string;
  'regions-file'?: string;
  'all-regions'?: boolean;
}

/** The regions the options ask for, or a refusal naming what is wrong with them. */
export async function regionsFrom(values: RegionOptions, usage: string): Promise<Regions> {
  const given = [values.regions, values['regions-file'], values['all-regions']].filter(
    (value) => value !== undefined && value !== false,
  );
  if (given.length !== 1) {
    throw new ReleaseRefused([`name the regions exactly once. ${usage}`]);
  }
  if (values['all-regions']) return 'all';
  const file = values['regions-file'];
  const text =
    values.regions ??
    (await fs.readFile(file ?? '', 'utf8').catch((error: Error) => {
      throw new ReleaseRefused([`cannot read the regions file ${file}: ${error.message}`]);
    }));
  const lines = values.regions
    ? text.split(/[,;]/)
    : text.split('\n').map((line) => line.replace(/#.*/, ''));
  return lines.map((region) => region.trim()).filter((region) => region !== '');
}
