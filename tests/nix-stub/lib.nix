# The parts of nixpkgs' lib that the tka flake uses, with the same names and semantics (module functions
# return the same tagged values as nixpkgs so a module's config can be inspected; lib.fileset really filters
# the source and fails on missing paths like the real one).
let
  inherit (builtins)
    all any attrNames concatStringsSep elem filter foldl' genList hasAttr isAttrs isFunction isList
    isPath listToAttrs pathExists stringLength substring toString typeOf;

  hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;
  hasSuffix = suffix: s:
    let
      ls = stringLength s;
      lx = stringLength suffix;
    in
    ls >= lx && substring (ls - lx) lx s == suffix;

  genAttrs = names: f: listToAttrs (map (n: { name = n; value = f n; }) names);

  attrByPath = path: default: set:
    if path == [ ] then set
    else if isAttrs set && hasAttr (builtins.head path) set
    then attrByPath (builtins.tail path) default set.${builtins.head path}
    else default;

  recursiveUpdate = a: b:
    a // builtins.mapAttrs
      (n: v: if isAttrs v && isAttrs (a.${n} or null) && !(v ? outPath) then recursiveUpdate a.${n} v else v)
      b;

  # Versions compared component-wise as numbers (what builtins.compareVersions does).
  versionAtLeast = v: min: builtins.compareVersions v min >= 0;

  # ---------------------------------------------------------------------------------------------- fileset
  # A file set is a list of entries { base; pred }: every file under `base` (or `base` itself) for which
  # `pred` holds. Paths given directly must exist, as in nixpkgs.
  fileset =
    let
      isFileset = v: isAttrs v && (v._type or null) == "fileset";
      coerce = context: v:
        if isFileset v then v
        else if isPath v then
          (if pathExists v then { _type = "fileset"; entries = [{ base = toString v; pred = _: true; }]; }
          else throw "lib.fileset.${context}: ${toString v} is a path that does not exist.")
        else throw "lib.fileset.${context}: expected a path or a file set, got a ${typeOf v}.";
      fileAttrs = path: type:
        let name = baseNameOf path; in {
          inherit name type;
          hasExt = ext: hasSuffix ".${ext}" name;
        };
      inEntry = path: type: e:
        (path == e.base || hasPrefix "${e.base}/" path)
        && (type == "directory" || e.pred (fileAttrs path type));
      isAncestor = path: e: hasPrefix "${path}/" e.base;
    in
    {
      unions = list: {
        _type = "fileset";
        entries = builtins.concatMap (v: (coerce "unions" v).entries) list;
      };
      maybeMissing = path:
        if pathExists path then coerce "maybeMissing" path else { _type = "fileset"; entries = [ ]; };
      fileFilter = pred: path:
        if !(isFunction pred) then throw "lib.fileset.fileFilter: first argument is not a function."
        else {
          _type = "fileset";
          entries = map (e: e // { inherit pred; }) (coerce "fileFilter" path).entries;
        };
      toSource = { root, fileset }:
        let
          set = coerce "toSource" fileset;
          rootStr = toString root;
        in
        if !(pathExists root) then throw "lib.fileset.toSource: root ${rootStr} does not exist."
        else if !(all (e: e.base == rootStr || hasPrefix "${rootStr}/" e.base) set.entries)
        then throw "lib.fileset.toSource: a file set element is not under root ${rootStr}."
        else
          builtins.path {
            name = "source";
            path = root;
            filter = path: type:
              any (inEntry path type) set.entries || (type == "directory" && any (isAncestor path) set.entries);

          };
    };

  # ---------------------------------------------------------------------------------------------- modules
  mkOption = args: { _type = "option"; } // args;
  types = {
    bool = { name = "bool"; };
    path = { name = "path"; };
    str = { name = "str"; };
    package = { name = "package"; };
    attrs = { name = "attrs"; };
    nullOr = t: { name = "nullOr"; elemType = t; };
    listOf = t: { name = "listOf"; elemType = t; };
  };
in
{
  inherit hasPrefix hasSuffix genAttrs attrByPath recursiveUpdate versionAtLeast fileset mkOption types;
  inherit (builtins) mapAttrs filter elem;

  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
  optionalAttrs = cond: set: if cond then set else { };
  optionalString = cond: s: if cond then s else "";
  concatStringsSep = concatStringsSep;
  throwIfNot = cond: msg: if cond then x: x else throw msg;
  assertMsg = cond: msg: cond || throw msg;
  getExe' = pkg: bin: "${pkg}/bin/${bin}";
  getExe = pkg: "${pkg}/bin/${pkg.meta.mainProgram or pkg.pname or pkg.name}";

  mkEnableOption = name: mkOption { type = types.bool; default = false; description = "Whether to enable ${name}."; };
  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkMerge = contents: { _type = "merge"; inherit contents; };
  mkDefault = content: { _type = "override"; priority = 1000; inherit content; };
  mkForce = content: { _type = "override"; priority = 50; inherit content; };
  literalExpression = text: { _type = "literalExpression"; inherit text; };

  licenses = {
    asl20 = { spdxId = "Apache-2.0"; };
    bsd3 = { spdxId = "BSD-3-Clause"; };
    mit = { spdxId = "MIT"; };
  };

  # Used by the stub's own tests.
  inherit all any attrNames foldl' genList isAttrs isList;
}
