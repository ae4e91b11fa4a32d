"""ADDiffDose: radiotherapy dose prediction in 3D Slicer. NOT FOR CLINICAL USE.

Thin module: the work is done by ADDiffDoseLib (``ADDiffDoseLib.slicer``); this file holds the module
description, the widget (parameter node + connectGui, Predict/Cancel, progress, log), a console logic and
the in-app self-test. Console use::

    logic = slicer.util.getModuleLogic("ADDiffDose")      # or ADDiffDose.ADDiffDoseLogic()
    dose = logic.predictDose(ctNode, segNode, beams="0,40,80,120,160,200,240,280,320", model="heuristic")
"""

import logging
from typing import Annotated

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

TECHNIQUES = ["IMRT", "VMAT", "3D-CRT"]
DEVICES = ["auto", "cpu", "cuda", "mps"]
OPENKBP_GANTRY = "0,40,80,120,160,200,240,280,320"
ROLE_COLUMNS = ["Segment", "Structure", "Role", "Prescription (Gy)"]


class ADDiffDose(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("ADDiffDose")
        self.parent.categories = [_("Radiotherapy")]
        self.parent.dependencies = []  # SlicerRT and PyTorch are optional at load time, checked on first use
        self.parent.contributors = ["ADDiffDose contributors"]
        self.parent.helpText = _(
            "Predicts a 3D dose distribution from a CT, structures and beam angles (latent conditional diffusion)."
            " <b>Research software, NOT FOR CLINICAL USE.</b>")
        self.parent.acknowledgementText = _("Trained on the OpenKBP data set (Babier et al., Med Phys 2021).")


@parameterNodeWrapper
class ADDiffDoseParameterNode:
    ctVolume: slicer.vtkMRMLScalarVolumeNode
    segmentation: slicer.vtkMRMLSegmentationNode
    outputDose: slicer.vtkMRMLScalarVolumeNode
    plannedDose: slicer.vtkMRMLScalarVolumeNode
    gantryAngles: str = OPENKBP_GANTRY
    energyMV: Annotated[float, WithinRange(1.0, 25.0)] = 6.0
    technique: Annotated[str, Choice(TECHNIQUES)] = "IMRT"
    model: str = "default"
    device: Annotated[str, Choice(DEVICES)] = "auto"
    steps: Annotated[int, WithinRange(0, 1000)] = 0  # 0 = the model's default
    samples: Annotated[int, WithinRange(1, 32)] = 1
    seed: Annotated[int, WithinRange(0, 2147483647)] = 0
    roleTable: str = ""  # JSON of ADDiffDoseLib.slicer.roles.RoleRow


class ADDiffDoseWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._guiObserver = None
        self._job = None
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self.onPoll)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ADDiffDose.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = ADDiffDoseLogic()
        self.ui.modelComboBox.addItems(self.logic.modelNames())
        self.ui.rolesTable.setColumnCount(len(ROLE_COLUMNS))
        self.ui.rolesTable.setHorizontalHeaderLabels(ROLE_COLUMNS)
        self.ui.predictButton.connect("clicked(bool)", self.onPredict)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.refreshRolesButton.connect("clicked(bool)", self.refreshRoles)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.ui.isodoseButton.connect("clicked(bool)", self.onIsodose)
        self.ui.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", lambda node: self.refreshRoles())
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self):
        self.onCancel()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._guiObserver)
            self._guiObserver = None

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.ctVolume:
            self._parameterNode.ctVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._guiObserver)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._guiObserver = self._parameterNode.connectGui(self.ui)
            self.refreshRoles()

    # --- role table --------------------------------------------------------------------------------
    def refreshRoles(self):
        from ADDiffDoseLib.slicer import roles

        seg = self.ui.segmentationSelector.currentNode()
        rows = roles.default_roles(seg) if seg else []
        table = self.ui.rolesTable
        table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            segmentItem = qt.QTableWidgetItem(row.segment_name)
            segmentItem.setData(qt.Qt.UserRole, row.segment_id)
            segmentItem.setFlags(qt.Qt.ItemIsEnabled)
            table.setItem(i, 0, segmentItem)
            table.setItem(i, 1, qt.QTableWidgetItem(row.structure))
            roleBox = qt.QComboBox()
            roleBox.addItems(list(roles.ROLE_CHOICES))
            roleBox.setCurrentText(row.role)
            table.setCellWidget(i, 2, roleBox)
            table.setItem(i, 3, qt.QTableWidgetItem("" if row.prescription_gy is None else f"{row.prescription_gy:g}"))

    def rolesFromTable(self):
        from ADDiffDoseLib.slicer import roles

        table = self.ui.rolesTable
        rows = []
        for i in range(table.rowCount):
            rx = table.item(i, 3).text().strip() if table.item(i, 3) else ""
            rows.append(roles.RoleRow(table.item(i, 0).data(qt.Qt.UserRole), table.item(i, 0).text(),
                                      table.item(i, 1).text().strip(), table.cellWidget(i, 2).currentText,
                                      float(rx) if rx else None))
        self._parameterNode.roleTable = roles.roles_to_json(rows)
        return rows

    # --- predict -----------------------------------------------------------------------------------
    def onPredict(self):
        if self._job is not None:
            return
        p = self._parameterNode
        self.ui.logTextEdit.clear()
        with slicer.util.tryWithErrorDisplay(_("Prediction could not start."), waitCursor=True):
            self.logic.ensureDependencies()
            self._job = self.logic.startPrediction(
                p.ctVolume, p.segmentation, beams=p.gantryAngles, roles=self.rolesFromTable(),
                model=self.ui.modelComboBox.currentText, steps=p.steps or None, samples=p.samples, seed=p.seed,
                device=p.device, energyMV=p.energyMV, technique=p.technique, outputNode=p.outputDose)
            self._setRunning(True)
            self._timer.start()

    def onPoll(self):
        job = self._job
        if job is None:
            return
        for pct, text in job.poll():
            if pct is not None:
                self.ui.progressBar.setValue(int(pct))
            self.ui.logTextEdit.appendPlainText(text if pct is None else f"{pct:5.1f} % {text}")
        if job.finished:
            self._timer.stop()
            self._job = None
            self._setRunning(False)
            with slicer.util.tryWithErrorDisplay(_("Prediction failed."), waitCursor=True):
                dose = job.finish()
                self._parameterNode.outputDose = dose
                slicer.util.setSliceViewerLayers(background=self._parameterNode.ctVolume, foreground=dose,
                                                 foregroundOpacity=0.5)
                self.ui.logTextEdit.appendPlainText(_("Done: {name}").format(name=dose.GetName()))

    def onCancel(self):
        if self._job is not None:
            self._timer.stop()
            self._job.cancel()
            self._job = None
            self._setRunning(False)
            self.ui.logTextEdit.appendPlainText(_("Cancelled."))

    def _setRunning(self, running):
        self.ui.predictButton.enabled = not running
        self.ui.cancelButton.enabled = running
        self.ui.progressBar.setValue(0)

    # --- review ------------------------------------------------------------------------------------
    def onCompare(self):
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Comparison failed."), waitCursor=True):
            result = self.logic.compareDoses(p.plannedDose, p.outputDose, p.segmentation)
            self.ui.compareResultLabel.text = _("Gamma 3%/3mm pass rate: {rate:.1f} %").format(
                rate=result.gamma_pass_rate_pct)
            for name, reason in result.skipped.items():  # segments without a DVH, and why
                self.ui.logTextEdit.appendPlainText(_("No DVH for {name}: {reason}").format(name=name, reason=reason))
            slicer.modules.plots.logic().ShowChartInLayout(result.chart)
            self._showTable(result.metrics_table)

    def onIsodose(self):
        with slicer.util.tryWithErrorDisplay(_("Isodose failed."), waitCursor=True):
            dose = self._parameterNode.outputDose
            self.logic.createIsodose(dose)
            from ADDiffDoseLib.slicer.isodose import legend_of

            self._showTable(legend_of(dose))  # level, % of prescription, Gy, colour

    def _showTable(self, table):
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()


class ADDiffDoseLogic(ScriptedLoadableModuleLogic):
    """Console API (camelCase wrappers of ADDiffDoseLib.slicer.logic.DoseLogic on slicer.mrmlScene)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        from ADDiffDoseLib.slicer.logic import DoseLogic

        self.core = DoseLogic()

    def getParameterNode(self):
        return ADDiffDoseParameterNode(super().getParameterNode())

    def ensureDependencies(self):
        """PyTorch via the PyTorch extension (declining stops here), the rest from requirements.txt (Slicer >= 5.12)."""
        from ADDiffDoseLib.slicer.dependencies import ensure_torch

        try:
            import PyTorchUtils  # the PyTorch extension's module (imports Qt: not done in the library)
        except ImportError:
            PyTorchUtils = None
        ensure_torch(PyTorchUtils)
        from slicer.packaging import load_requirements, pip_ensure

        pip_ensure(load_requirements(self.resourcePath("requirements.txt")), requester="ADDiffDose")

    def resourcePath(self, relativePath):
        import os

        return os.path.join(os.path.dirname(slicer.modules.addiffdose.path), "Resources", relativePath)

    def modelNames(self):
        try:
            from ADDiffDoseLib.model.weights import all_models

            return ["default"] + [e.name for e in all_models()]
        except Exception as exc:  # a broken manifest must not break the GUI
            logging.warning(f"ADDiffDose: cannot list models: {exc}")
            return ["default", "heuristic"]

    def startPrediction(self, ctNode, segmentationNode, beams=None, roles=None, model="default", steps=None,
                        samples=1, seed=0, device="auto", energyMV=6.0, technique="IMRT", outputNode=None):
        return self.core.start_prediction(slicer.mrmlScene, ctNode, segmentationNode, output_node=outputNode,
                                          beams=beams, roles=roles, model=model, steps=steps, samples=samples,
                                          seed=seed, device=device, energy_mv=energyMV, technique=technique)

    def predictDose(self, ctNode, segmentationNode, beams=None, roles=None, model="default", steps=None,
                    samples=1, seed=0, device="auto", outputNode=None, progress=None, energyMV=6.0,
                    technique="IMRT"):
        """Blocking: returns the dose node (Gy, marked as SlicerRT dose).

        beams: gantry angles ("0,40,80" or a list) or Beam objects; energyMV / technique apply to angle lists.
        """
        return self.core.predict_dose(slicer.mrmlScene, ctNode, segmentationNode, beams=beams, roles=roles,
                                      model=model, steps=steps, samples=samples, seed=seed, device=device,
                                      output_node=outputNode, progress=progress, log=logging.info,
                                      energy_mv=energyMV, technique=technique)

    def exportDoseAsRtDose(self, doseNode, path, referenceNode=None, overwrite=False):
        """Write the dose node as a DICOM RT Dose (library writer) in the reference CT's study; returns the path."""
        from ADDiffDoseLib.slicer.export import export_dose_rtdose

        database = getattr(slicer, "dicomDatabase", None)
        lookup = database.instanceValue if database is not None and database.isOpen else None
        out, warnings = export_dose_rtdose(doseNode, path, reference_node=referenceNode, instance_value=lookup,
                                           overwrite=overwrite)
        for w in warnings:
            logging.warning(f"ADDiffDose export: {w}")
        return str(out)

    def predictFolder(self, inputFolder, outputFolder, **kwargs):
        """Every DICOM study below inputFolder -> <outputFolder>/<study>/ADDiffDose_RTDOSE.dcm."""
        return self.core.predict_folder(inputFolder, outputFolder, **kwargs)

    def compareDoses(self, plannedNode, predictedNode, segmentationNode):
        from ADDiffDoseLib.slicer.compare import compare_doses

        return compare_doses(slicer.mrmlScene, plannedNode, predictedNode, segmentationNode)

    def computeDvh(self, doseNode, segmentationNode, dashed=True):
        from ADDiffDoseLib.slicer.dvh import compute_dvh_nodes

        return compute_dvh_nodes(slicer.mrmlScene, doseNode, segmentationNode, dashed=dashed)

    def createIsodose(self, doseNode, levelsGy=None, levelsPercent=None, prescriptionGy=None):
        """SlicerRT's isodose model (else a segmentation); default levels 50..105 % of the dose's prescription."""
        from ADDiffDoseLib.slicer.isodose import create_isodose

        return create_isodose(slicer.mrmlScene, doseNode, levelsGy, prescription_gy=prescriptionGy,
                              levels_pct=levelsPercent)


class ADDiffDoseTest(ScriptedLoadableModuleTest):
    """Same scenario as Testing/test_slicer_logic.py: a synthetic phantom, the heuristic model, DVH."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_predict_heuristic()

    def test_predict_heuristic(self):
        import numpy as np

        from ADDiffDoseLib.case import Case, Role, Structure
        from ADDiffDoseLib.geometry import Grid
        from ADDiffDoseLib.slicer import dose_output, nodes

        grid = Grid((40, 48, 48), (3.0, 3.0, 3.0), (-70.0, -70.0, -60.0), np.eye(3))
        k, j, i = np.indices(grid.shape)
        body = (j - 24) ** 2 + (i - 24) ** 2 < 20 ** 2
        ptv = body & ((j - 24) ** 2 + (i - 24) ** 2 + (k - 20) ** 2 < 6 ** 2)
        cord = body & (abs(j - 36) < 2) & (abs(i - 24) < 2)
        structures = {"External": Structure("External", body, Role.EXTERNAL),
                      "PTV60": Structure("PTV60", ptv, Role.TARGET, 60.0),
                      "SpinalCord": Structure("SpinalCord", cord, Role.OAR)}
        case = Case("phantom", grid, np.where(body, 0.0, -1000.0).astype(np.float32), structures)
        ctNode, segNode = nodes.add_case_to_scene(slicer.mrmlScene, case)
        logic = ADDiffDoseLogic()
        dose = logic.predictDose(ctNode, segNode, beams=OPENKBP_GANTRY, model="heuristic", seed=0)
        self.assertTrue(dose_output.is_dose_node(dose))
        array = slicer.util.arrayFromVolume(dose)
        self.assertGreater(array[ptv].mean(), array[cord].mean())
        self.assertGreaterEqual(float(array.min()), 0.0)
        dvh = logic.computeDvh(dose, segNode)
        self.assertGreater(dvh.chart.GetNumberOfPlotSeriesNodes(), 0)
        self.assertEqual(dvh.skipped, {})
        first, second = logic.createIsodose(dose), logic.createIsodose(dose)
        if hasattr(slicer.modules, "isodose"):  # SlicerRT: one parameter node and model per dose
            self.assertEqual(first.GetID(), second.GetID())
        import os
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            path = logic.exportDoseAsRtDose(dose, os.path.join(folder, "RD.dcm"), referenceNode=ctNode)
            self.assertTrue(os.path.isfile(path))
        self.delayDisplay("ADDiffDose test passed")
