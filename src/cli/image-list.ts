import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import { globalsOf } from './context.js';
import { nameWithVersion } from '../appc/image-ref.js';
import { fullTime, humanAgo, humanSize, parseFormat, printJson, printTable, tableImageId } from './output.js';

const FIELDS = ['id', 'name', 'size', 'importtime', 'lastused', 'latest'] as const;
type Field = (typeof FIELDS)[number];
const HEADERS: Record<Field, string> = { id: 'ID', name: 'NAME', size: 'SIZE', importtime: 'IMPORT TIME', lastused: 'LAST USED', latest: 'LATEST' };

function parseFields(value: string): Field[] {
  return value.split(',').map((f) => {
    const field = f.trim().toLowerCase();
    if (!(FIELDS as readonly string[]).includes(field)) throw new UsageError(`unknown field "${f}"; choose from ${FIELDS.join(', ')}`);
    return field as Field;
  });
}

export function register(image: Command): void {
  image
    .command('list')
    .description('list images in the local store')
    .option('--fields <fields>', `comma-separated list of fields to display (${FIELDS.join(', ')})`, 'id,name,size,importtime,lastused')
    .option('--sort <field>', 'field to sort by (id, name, size, importtime, lastused)', 'importtime')
    .option('--order <order>', 'sort order: asc or desc', 'asc')
    .option('--full', 'use long output format', false)
    .option('--no-legend', 'suppress a legend with the list')
    .option('--format <format>', 'choose the output format: json, json-pretty', '')
    .action(async (opts: { fields: string; sort: string; order: string; full: boolean; legend: boolean; format: string }, cmd: Command) => {
      const globals = globalsOf(cmd);
      const format = parseFormat(opts.format);
      const fields = parseFields(opts.fields);
      const [sortField] = parseFields(opts.sort);
      if (opts.order !== 'asc' && opts.order !== 'desc') throw new UsageError(`unknown --order "${opts.order}"; use asc or desc`);
      const { Store } = await import('../store/store.js');
      const store = Store.open(globals.dir, { readonly: true });
      let images;
      try {
        images = store.listImages();
      } finally {
        store.close();
      }
      const rows = images.map((img) => ({ img, name: nameWithVersion(img), size: img.size + img.treeSize }));
      const key = (r: (typeof rows)[number]): string | number =>
        ({ id: r.img.id, name: r.name, size: r.size, importtime: r.img.importTime, lastused: r.img.lastUsed, latest: Number(r.img.latest) })[sortField!];
      rows.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0) * (opts.order === 'desc' ? -1 : 1));
      if (format !== 'tabbed') {
        printJson(
          rows.map((r) => ({ id: r.img.id, name: r.name, import_time: r.img.importTime * 1e6, last_used_time: r.img.lastUsed * 1e6, size: r.size, latest: r.img.latest })),
          format,
        );
        return;
      }
      const cell = (r: (typeof rows)[number], f: Field): string => {
        switch (f) {
          case 'id':
            return opts.full ? r.img.id : tableImageId(r.img.id);
          case 'name':
            return r.name;
          case 'size':
            return opts.full ? String(r.size) : humanSize(r.size);
          case 'importtime':
            return opts.full ? fullTime(new Date(r.img.importTime)) : humanAgo(new Date(r.img.importTime));
          case 'lastused':
            return opts.full ? fullTime(new Date(r.img.lastUsed)) : humanAgo(new Date(r.img.lastUsed));
          case 'latest':
            return String(r.img.latest);
        }
      };
      printTable(
        fields.map((f) => HEADERS[f]),
        rows.map((r) => fields.map((f) => cell(r, f))),
        opts.legend,
      );
    });
}
