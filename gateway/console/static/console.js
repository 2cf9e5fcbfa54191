// The console works without this script; it only adds "Copy" buttons next to the notes.
document.querySelectorAll("button[data-copy]").forEach(function (button) {
  var area = document.getElementById(button.getAttribute("data-copy"));
  if (!area || !navigator.clipboard) { return; }
  button.hidden = false;
  button.addEventListener("click", function () {
    navigator.clipboard.writeText(area.value).then(function () {
      button.setAttribute("aria-live", "polite");
    });
  });
});
