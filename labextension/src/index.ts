/**
 * cxr-widgets in JupyterLab: "Open With → Chest X-ray viewer" for DICOM, PNG and JPEG
 * files (the default for .dcm), "Report…" from a file or a selection of up to three
 * (DICOM files named without an extension too: the server checks their content),
 * a launcher card and command-palette entries. Decoding happens on the server
 * (the cxr-widgets server extension), so no kernel is needed to look at a file.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, Dialog, showDialog, WidgetTracker } from '@jupyterlab/apputils';
import { PathExt } from '@jupyterlab/coreutils';
import { ABCWidgetFactory, DocumentRegistry, DocumentWidget } from '@jupyterlab/docregistry';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import { NotebookActions, NotebookPanel } from '@jupyterlab/notebook';

import { copyTutorials, localEndpoint, newNotebook } from './api';
import { CxrViewer } from './viewer';

const FACTORY = 'Chest X-ray viewer';
const IMAGE_TYPES = ['dicom', 'png', 'jpg'];
const IMAGE_EXTENSIONS = ['.dcm', '.dicom', '.png', '.jpg', '.jpeg'];
/** DICOM files are often named without an extension (IM0001) or by a UID (1.2.840...);
 * the server checks every file's content before it makes a study of it. */
const MAYBE_DICOM = /^([^.]+|\d+(\.\d+)+)$/;

/** Whether a file may be an image of a study: by its extension, or a DICOM-like name. */
function maybeImage(path: string): boolean {
  const name = PathExt.basename(path);
  return IMAGE_EXTENSIONS.includes(PathExt.extname(name).toLowerCase()) || MAYBE_DICOM.test(name);
}

namespace CommandIDs {
  export const newPanel = 'cxr-widgets:new-panel';
  export const report = 'cxr-widgets:report';
  export const tutorials = 'cxr-widgets:copy-tutorials';
  export const startEndpoint = 'cxr-widgets:start-local-endpoint';
  export const stopEndpoint = 'cxr-widgets:stop-local-endpoint';
  export const showEndpoint = 'cxr-widgets:show-local-endpoint';
}

class CxrViewerFactory extends ABCWidgetFactory<DocumentWidget<CxrViewer>> {
  constructor(
    options: DocumentRegistry.IWidgetFactoryOptions,
    private onReport: (path: string) => void
  ) {
    super(options);
  }

  protected createNewWidget(context: DocumentRegistry.Context): DocumentWidget<CxrViewer> {
    const content = new CxrViewer(context.path, this.onReport);
    const widget = new DocumentWidget({ content, context });
    widget.title.caption = `${context.path} (chest X-ray viewer)`;
    return widget;
  }
}

/** Open ``path`` and run all its cells once the kernel is ready. */
async function openAndRun(app: JupyterFrontEnd, path: string): Promise<void> {
  const widget = (await app.commands.execute('docmanager:open', { path })) as NotebookPanel;
  if (!(widget instanceof NotebookPanel)) {
    return;
  }
  await widget.context.ready;
  await widget.sessionContext.ready;
  await NotebookActions.runAll(widget.content, widget.sessionContext);
}

async function report(app: JupyterFrontEnd, paths: string[]): Promise<void> {
  try {
    await openAndRun(app, await newNotebook(paths));
  } catch (error) {
    await showDialog({
      title: 'Cannot open a report notebook',
      body: (error as Error).message,
      buttons: [Dialog.okButton()]
    });
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'cxr-widgets-labextension:plugin',
  description: 'Chest X-ray viewer, report notebooks, launcher card and commands for cxr-widgets.',
  autoStart: true,
  optional: [ICommandPalette, ILauncher, IDefaultFileBrowser, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    launcher: ILauncher | null,
    browser: IDefaultFileBrowser | null,
    restorer: ILayoutRestorer | null
  ) => {
    const { commands, docRegistry } = app;
    if (!docRegistry.getFileType('dicom')) {
      docRegistry.addFileType({
        name: 'dicom',
        displayName: 'DICOM image',
        extensions: ['.dcm', '.dicom'],
        mimeTypes: ['application/dicom'],
        fileFormat: 'base64',
        contentType: 'file'
      });
    }
    const factory = new CxrViewerFactory(
      {
        name: FACTORY,
        label: FACTORY,
        fileTypes: IMAGE_TYPES,
        defaultFor: ['dicom'],
        modelName: 'base64',
        readOnly: true
      },
      path => void report(app, [path])
    );
    docRegistry.addWidgetFactory(factory);
    const tracker = new WidgetTracker<DocumentWidget<CxrViewer>>({ namespace: 'cxr-viewer' });
    factory.widgetCreated.connect((_, widget) => void tracker.add(widget));
    if (restorer) {
      void restorer.restore(tracker, {
        command: 'docmanager:open',
        args: widget => ({ path: widget.context.path, factory: FACTORY }),
        name: widget => widget.context.path
      });
    }

    const cwd = () => browser?.model.path ?? '';
    const selectedImages = (): string[] => {
      if (!browser) {
        return [];
      }
      return Array.from(browser.selectedItems())
        .filter(item => item.type !== 'directory' && maybeImage(item.path))
        .map(item => item.path);
    };

    commands.addCommand(CommandIDs.newPanel, {
      label: 'CXRReportGen',
      caption: 'A new notebook with the ReportGenWidget panel (offline demo until you pick an endpoint)',
      execute: async () => {
        await openAndRun(app, await newNotebook([], cwd()));
      }
    });
    commands.addCommand(CommandIDs.report, {
      label: 'Report… (CXRReportGen on this study)',
      caption: 'Up to three images: frontal, lateral, prior, in the order selected',
      isEnabled: () => {
        const n = selectedImages().length;
        return n >= 1 && n <= 3;
      },
      execute: async () => report(app, selectedImages().slice(0, 3))
    });
    commands.addCommand(CommandIDs.tutorials, {
      label: 'CXRReportGen: copy the tutorials into this folder',
      execute: async () => {
        const result = await copyTutorials(cwd());
        await showDialog({
          title: 'CXRReportGen tutorials',
          body:
            `Copied: ${result.copied.join(', ') || 'none'}.` +
            (result.skipped.length ? ` Already there (not overwritten): ${result.skipped.join(', ')}.` : ''),
          buttons: [Dialog.okButton()]
        });
      }
    });
    const endpointDialog = async (title: string, status: { running: boolean; url: string | null }) =>
      showDialog({
        title,
        body: status.running
          ? `The local endpoint answers canned demo findings at ${status.url} (127.0.0.1 only).`
          : 'The local endpoint is not running.',
        buttons: [Dialog.okButton()]
      });
    commands.addCommand(CommandIDs.startEndpoint, {
      label: 'CXRReportGen: start the local endpoint',
      execute: async () => endpointDialog('Local endpoint', await localEndpoint('start'))
    });
    commands.addCommand(CommandIDs.stopEndpoint, {
      label: 'CXRReportGen: stop the local endpoint',
      execute: async () => endpointDialog('Local endpoint', await localEndpoint('stop'))
    });
    commands.addCommand(CommandIDs.showEndpoint, {
      label: 'CXRReportGen: show the local endpoint URL',
      execute: async () => endpointDialog('Local endpoint', await localEndpoint())
    });

    if (palette) {
      const category = 'CXRReportGen';
      for (const command of [
        CommandIDs.newPanel,
        CommandIDs.tutorials,
        CommandIDs.startEndpoint,
        CommandIDs.stopEndpoint,
        CommandIDs.showEndpoint
      ]) {
        palette.addItem({ command, category });
      }
    }
    if (launcher) {
      launcher.add({ command: CommandIDs.newPanel, category: 'Notebook', rank: 50 });
    }
    app.contextMenu.addItem({
      command: CommandIDs.report,
      selector: '.jp-DirListing-item[data-isdir="false"]',
      rank: 3
    });
  }
};

export default plugin;
