/* Sorting and filtering of the tables the pages already hold (readable without JavaScript): DataTables from the
   itables package (assets/dt_bundle.js), plus select boxes that keep the rows of one arch / profile / algorithm /
   bit-width, or hide the columns of the other profiles in a table with one column per profile. */
(function () {
  "use strict";

  function dataKey(prefix, axis) {
    return prefix + axis.charAt(0).toUpperCase() + axis.slice(1);
  }

  function enhance(mod, table) {
    var DataTable = mod.default;
    var itable = new mod.ITable(table, {
      paging: false, order: [], autoWidth: false, info: true, searching: true,
      layout: {topStart: null, topEnd: "search", bottomStart: "info", bottomEnd: null}
    });
    var dt = itable.dt;
    var state = {};
    DataTable.ext.search.push(function (settings, data, index) {
      if (settings.nTable !== table) { return true; }
      var tr = settings.aoData[index].nTr;
      for (var axis in state) {
        var have = tr.dataset[dataKey("f", axis)];
        if (state[axis] && have !== undefined && have !== state[axis]) { return false; }
      }
      return true;
    });
    function apply() {
      dt.columns().every(function () {
        var th = this.header();
        var show = true;
        for (var axis in state) {
          var g = th.getAttribute("data-g-" + axis);
          if (state[axis] && g !== null && g !== state[axis]) { show = false; }
        }
        if (this.visible() !== show) { this.visible(show, false); }
      });
      dt.columns.adjust().draw();
      table.setAttribute("data-filter", JSON.stringify(state));
    }
    var bar = document.querySelector('.filters[data-for="' + table.id + '"]');
    if (bar) {
      bar.hidden = false;
      bar.querySelectorAll("select[data-axis]").forEach(function (sel) {
        sel.addEventListener("change", function () {
          state[sel.getAttribute("data-axis")] = sel.value;
          apply();
        });
      });
    }
  }

  function start() {
    var tables = document.querySelectorAll("table.bench-table");
    if (!tables.length || !window.benchDataTables) { return; }
    window.benchDataTables.then(function (mod) {
      tables.forEach(function (t) { enhance(mod, t); });
      document.body.setAttribute("data-tables-ready", "1");
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
