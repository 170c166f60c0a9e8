import { z } from 'zod';

/**
 * zod as every border uses it. `jitless`: each schema parses a file or an answer once or twice per
 * command, so compiling a parser with `new Function` costs more than it saves (it was a tenth of
 * a converged enable, docs/performance.md).
 */
z.config({ jitless: true });

export { z };
