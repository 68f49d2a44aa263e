(function () {
  function value(row, index) {
    var cell = row.cells[index];
    var raw = cell.getAttribute('data-value');
    if (raw === null || raw === '') { return cell.textContent.trim().toLowerCase(); }
    return parseFloat(raw);
  }
  function sortTable(table, index, descending) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, index), y = value(b, index);
      if (typeof x === 'number' && typeof y === 'number') { return descending ? y - x : x - y; }
      return descending ? String(y).localeCompare(String(x)) : String(x).localeCompare(String(y));
    });
    rows.forEach(function (row) { body.appendChild(row); });
    var headers = table.tHead.rows[0].cells;
    for (var i = 0; i < headers.length; i++) { headers[i].classList.remove('sorted-asc', 'sorted-desc'); }
    headers[index].classList.add(descending ? 'sorted-desc' : 'sorted-asc');
    table.setAttribute('data-sorted-by', headers[index].getAttribute('data-key'));
  }
  var tables = document.querySelectorAll('table.sortable');
  tables.forEach(function (table) {
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headers, function (header, index) {
      header.addEventListener('click', function () {
        var descending = !header.classList.contains('sorted-desc');
        sortTable(table, index, descending);
      });
    });
  });
  var match = /sort=([^&]+)/.exec(window.location.hash);
  var key = match ? decodeURIComponent(match[1]) : 'mRI';
  tables.forEach(function (table) {
    var headers = table.tHead.rows[0].cells;
    for (var i = 0; i < headers.length; i++) {
      if (headers[i].getAttribute('data-key') === key) {
        sortTable(table, i, headers[i].getAttribute('data-order') !== 'asc');
      }
    }
  });
  var rows = document.querySelectorAll('table.measured tbody tr').length;
  var status = document.getElementById('status');
  status.textContent = rows ? rows + ' measured entries, sorted by ' + key + '; click a column header to sort.'
                            : 'No measured entries: reported numbers only; click a column header to sort.';
  document.body.setAttribute('data-ready', 'true');
})();
