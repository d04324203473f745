"""`python -m napari_raysam.launch`: napari with the sample image and our docks open."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sample", default="cells", choices=["cells", "hpa"])
    parser.add_argument("--screenshot", help="save a screenshot of the window and quit")
    args = parser.parse_args(argv)

    import napari

    viewer = napari.Viewer(title="napari-raysam")
    viewer.open_sample("napari-raysam", args.sample)
    for dock in ("Segment", "Export"):
        viewer.window.add_plugin_dock_widget("napari-raysam", dock)
    if args.screenshot:
        from qtpy.QtWidgets import QApplication

        viewer.window._qt_window.resize(1400, 900)
        viewer.window._qt_window.show()
        for _ in range(20):
            QApplication.processEvents()
        viewer.screenshot(args.screenshot, canvas_only=False)
        viewer.close()
        return 0
    napari.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
