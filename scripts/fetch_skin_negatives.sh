#!/bin/sh
# Photos that are not skin, for scripts/train_skin_check.py: Debian's desktop backgrounds, game textures,
# a computer-vision test set and Tux Paint's stamps (animals, food, plants, things). About 1 GB of
# packages, unpacked into $1 (default runs/skin_negatives). Needs apt-get and dpkg-deb (Debian/Ubuntu).
set -eu
out=${1:-runs/skin_negatives}
mkdir -p "$out/debs"
cd "$out/debs"
apt-get download gnome-backgrounds mate-backgrounds xfdesktop4-data plasma-workspace-wallpapers ukui-wallpapers \
    lomiri-wallpapers colobot-common-textures nexuiz-textures visp-images-data tuxpaint-stamps-default
cd ..
for deb in debs/*.deb; do
    name=$(basename "$deb" | cut -d_ -f1)
    mkdir -p "$name"
    dpkg-deb -x "$deb" "$name"
done
# Nexuiz keeps its textures in a zip. Tux Paint's people and medical stamps show skin; its symbols and
# cartoons are drawings, not photos.
python -c "import sys, zipfile; [zipfile.ZipFile(p).extractall(sys.argv[1]) for p in sys.argv[2:]]" \
    nexuiz-textures/unpacked nexuiz-textures/usr/share/games/nexuiz/data/*.pk3
rm -rf tuxpaint-stamps-default/usr/share/tuxpaint/stamps/people tuxpaint-stamps-default/usr/share/tuxpaint/stamps/medical \
    tuxpaint-stamps-default/usr/share/tuxpaint/stamps/symbols debs
find tuxpaint-stamps-default -type d -name cartoon -prune -exec rm -rf {} +
echo "negatives in $out"
