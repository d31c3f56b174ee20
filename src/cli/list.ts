import type { Command } from 'commander';
import { globalsOf } from './context.js';
import { fullTime, humanAgo, parseFormat, printJson, printTable, tableImageId } from './output.js';

export function register(program: Command): void {
  program
    .command('list')
    .description('list pods')
    .option('--full', 'use long output format', false)
    .option('--no-legend', 'suppress a legend with the list')
    .option('--format <format>', 'choose the output format: json, json-pretty', '')
    .action(async (opts: { full: boolean; legend: boolean; format: string }, cmd: Command) => {
      const globals = globalsOf(cmd);
      const format = parseFormat(opts.format);
      const { Pod } = await import('../pod/pod.js');
      const { podInfo, podJson } = await import('../pod/info.js');
      const infos = Pod.listAll(globals.dir).map(podInfo);
      infos.sort((a, b) => (a.created?.getTime() ?? 0) - (b.created?.getTime() ?? 0));
      if (format !== 'tabbed') {
        printJson(infos.map(podJson), format);
        return;
      }
      const when = (d: Date | undefined) => (d ? (opts.full ? fullTime(d) : humanAgo(d)) : '');
      const rows: string[][] = [];
      for (const p of infos) {
        const apps = p.apps.length > 0 ? p.apps : [{ name: '-', image: '-', imageId: '' }];
        apps.forEach((a, i) => {
          const image = opts.full ? `${a.image}\t${a.imageId ? tableImageId(a.imageId) : '-'}` : a.image;
          if (i === 0) rows.push([opts.full ? p.uuid : p.uuid.slice(0, 8), a.name, image, p.state, when(p.created), when(p.started), p.networks]);
          else rows.push(['', a.name, image, '', '', '', '']);
        });
      }
      const header = opts.full ? ['UUID', 'APP', 'IMAGE NAME', 'IMAGE ID', 'STATE', 'CREATED', 'STARTED', 'NETWORKS'] : ['UUID', 'APP', 'IMAGE NAME', 'STATE', 'CREATED', 'STARTED', 'NETWORKS'];
      printTable(header, rows.map((r) => r.join('\t').split('\t')), opts.legend);
    });
}
