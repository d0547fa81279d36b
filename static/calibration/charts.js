// The calibration page's two charts (uPlot, vendored under static/vendor/uplot/), drawn
// from the JSON the page embeds (json_script); the tables beside them hold the same numbers.
(function () {
  "use strict";
  function draw() {
    var source = document.getElementById("calibration-data");
    if (!source || typeof uPlot === "undefined") return;
    var data = JSON.parse(source.textContent);
    if (!data) return;
    var width = function (id) { return Math.max(280, document.getElementById(id).clientWidth); };
    var rel = data.reliability;
    if (rel.stated.length) {
      // Points sorted by stated confidence; the diagonal is perfect calibration.
      var order = rel.stated.map(function (_, i) { return i; })
        .sort(function (a, b) { return rel.stated[a] - rel.stated[b]; });
      var xs = order.map(function (i) { return rel.stated[i]; });
      new uPlot({
        width: width("reliability-chart"), height: 220,
        scales: { x: { time: false, range: [0, 1] }, y: { range: [0, 1] } },
        series: [
          { label: "stated" },
          { label: "agreed", stroke: "#2f5bd3", width: 2, points: { size: 7 } },
          { label: "calibrated", stroke: "#98a2b3", dash: [4, 4], points: { show: false } },
        ],
        axes: [{ label: "stated confidence" }, { label: "observed agreement" }],
      }, [xs, order.map(function (i) { return rel.agreed[i]; }), xs], document.getElementById("reliability-chart"));
    }
    var curve = data.curve;
    new uPlot({
      width: width("curve-chart"), height: 220,
      scales: { x: { time: false }, y: { range: [0, 1] } },
      series: [
        { label: "threshold" },
        { label: "unreviewed share", stroke: "#12805c", width: 2 },
        { label: "upper bound", stroke: "#c01048", width: 2 },
        { label: "α", stroke: "#b54708", dash: [4, 4], points: { show: false } },
      ],
      axes: [{ label: "threshold" }, {}],
    }, [curve.threshold, curve.unreviewed, curve.bound, curve.threshold.map(function () { return curve.alpha; })],
    document.getElementById("curve-chart"));
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
